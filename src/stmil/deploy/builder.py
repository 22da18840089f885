"""A small ONNX graph builder: named initializers and nodes, nothing stmil-specific.

Only :mod:`onnx` is needed (the ``stmil[onnx]`` extra); it is imported by the functions that
build, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stmil import __version__

if TYPE_CHECKING:
    import onnx

#: ONNX opset of every exported graph. 17 or 18: ONNX Runtime's CUDA provider has no Pad
#: kernel from opset 19 and silently falls back to the CPU.
OPSET = 17
#: The symbolic first dimension of every input and output: any number of clips.
BATCH = "batch"


class GraphBuilder:
    """Collects nodes and initializers of one graph; :meth:`model` makes the ``ModelProto``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        """``name``, or ``name_2``, ``name_3``... if taken."""
        out, k = name, 1
        while out in self._names:
            k += 1
            out = f"{name}_{k}"
        self._names.add(out)
        return out

    def const(self, name: str, value: np.ndarray | float | list, dtype: Any = None) -> str:
        """An initializer holding ``value`` as ``dtype`` (default: an array's own dtype, else
        float32); returns its name."""
        from onnx import numpy_helper

        if dtype is None:
            dtype = value.dtype if isinstance(value, np.ndarray) else np.float32
        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        """Append a node with one output, named ``name`` (made unique); returns the output."""
        return self.op_n(op_type, inputs, name, 1, **attrs)[0]

    def op_n(self, op_type: str, inputs: list[str], name: str, n: int, **attrs: Any
             ) -> list[str]:
        """Append a node with ``n`` outputs (``name``, ``name:1``...); returns them."""
        from onnx import helper

        name = self.unique(name)
        outs = [name] + [self.unique(f"{name}:{k}") for k in range(1, n)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs

    def input(self, name: str, shape: list[int | str], dtype: Any = np.float32) -> str:
        """A graph input (``shape`` may hold :data:`BATCH`)."""
        from onnx import helper

        self._names.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, _elem(dtype), shape))
        return name

    def output(self, value: str, name: str, shape: list[int | str],
               dtype: Any = np.float32) -> None:
        """Expose ``value`` as the graph output ``name`` (an Identity when names differ)."""
        from onnx import helper

        if value != name:
            self._names.add(name)
            self.nodes.append(helper.make_node("Identity", [value], [name], name=name))
        self.outputs.append(helper.make_tensor_value_info(name, _elem(dtype), shape))

    def model(self, doc: str, metadata: dict[str, str]) -> onnx.ModelProto:
        """The model: opset :data:`OPSET`, producer ``stmil``, ``metadata`` as its props."""
        from onnx import helper

        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  self.initializers, doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="stmil", producer_version=__version__)
        model.ir_version = 8  # the IR of opset 17 (ONNX 1.12): runtimes from 1.12 on read it
        helper.set_model_props(model, metadata)
        return model


def _elem(dtype: Any) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def pooling_matrix(n: int, out: int) -> np.ndarray:
    """``(out, n)`` float32: row ``i`` averages the cells ``[floor(i*n/out), ceil((i+1)*n/out))``,
    the bins of :func:`torch.nn.functional.adaptive_avg_pool2d` along one axis (they overlap
    when ``out`` does not divide ``n``, and repeat cells when ``out > n``)."""
    m = np.zeros((out, n), dtype=np.float64)
    for i in range(out):
        lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m.astype(np.float32)


def adaptive_pool(g: GraphBuilder, x: str, size: tuple[int, int], grid: int, name: str) -> str:
    """``(..., H, W) -> (..., G, G)``: adaptive average pooling as two matrix products,
    ``P_H @ x @ P_W^T`` (:func:`pooling_matrix`), exact for any ``H``, ``W`` and ``G``."""
    h, w = size
    y = g.op("MatMul", [x, g.const(f"{name}.pool_w", pooling_matrix(w, grid).T)], f"{name}.w")
    return g.op("MatMul", [g.const(f"{name}.pool_h", pooling_matrix(h, grid)), y], name)
