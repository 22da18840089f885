"""The exported graphs, lowered from stmil's own modules to ONNX nodes.

**Features** (:func:`features_graph`): clips ``(B, 3, T, S, S)`` in ``[-1, 1]`` -> cuboid
features ``(B, G*G, C)`` and motion energy ``(B, G*G)``. The network is the
:class:`~stmil.features.i3d.InceptionI3d` instance given (its layers, kernels, strides, widths
and BatchNorm-folded weights), walked layer by layer; every module kind it holds has one
lowering here and an unknown one is refused. TF "SAME" padding of the strided layers becomes
explicit ``Pad`` nodes whose amounts are computed for the fixed ``T x S x S`` input
(:func:`~stmil.features.i3d.same_pads`: zeros before convolutions, ``-inf`` before max
pooling); stride-1 layers pad symmetrically through the op's ``pads``. No ``auto_pad``, no
``ceil_mode``. Cuboid pooling (:func:`~stmil.cuboids.pool_cuboids`: mean over time, adaptive
average pooling to G x G) and motion energy (:func:`~stmil.features.motion.motion_energy`,
before its rounding to 6 decimals) follow.

**Scorer** (:func:`scorer_graph`): features ``(B, N, C)`` (and motion energy ``(B, N)`` for a
run with a motion gate) -> cuboid scores ``(B, N)``: what
:meth:`~stmil.mil.detector.Detector.maps` computes. A grid-1 run scores the mean of the N
cuboids once and fills every cell; each instance is L2-normalised; the MLP; times the memory
gate (novelty against the bank, scaled and clipped to ``[0, 1]``); times the motion gate
``min(1, m / q)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from stmil.deploy import PRECISIONS
from stmil.deploy.builder import BATCH, GraphBuilder, adaptive_pool
from stmil.errors import ConfigError
from stmil.features.i3d import (
    Inception,
    InceptionI3d,
    MaxPoolSame,
    Unit3D,
    endpoint_channels,
    same_pads,
)
from stmil.mil.bags import L2_EPS
from stmil.mil.detector import Detector
from stmil.mil.memory import MemoryGate

if TYPE_CHECKING:
    import onnx



def _array(t: torch.Tensor, dtype: type = np.float32) -> np.ndarray:
    return t.detach().cpu().double().numpy().astype(dtype)


class _I3dLowering:
    """Emits the nodes of one :class:`InceptionI3d`, tracking the ``(T, H, W)`` shape."""

    def __init__(self, g: GraphBuilder, dtype: type) -> None:
        self.g, self.dtype = g, dtype

    def pad(self, x: str, pads: list[int], value: float, name: str) -> str:
        """``F.pad``-style ``[w0, w1, h0, h1, t0, t1]`` as a ``Pad`` of ``(B, C, T, H, W)``."""
        begin = [0, 0, pads[4], pads[2], pads[0]]
        end = [0, 0, pads[5], pads[3], pads[1]]
        g = self.g
        return g.op("Pad", [x, g.const(f"{name}.pads", begin + end, np.int64),
                            g.const(f"{name}.value", value, self.dtype)], name, mode="constant")

    def unit(self, m: Unit3D, x: str, shape: tuple[int, ...], name: str
             ) -> tuple[str, tuple[int, ...]]:
        """Conv3d (+ ReLU) with SAME padding."""
        g, k, s = self.g, m.kernel, m.stride
        if s[0] != 1:
            p = same_pads(shape, k, s)
            x = self.pad(x, p, 0.0, f"{name}.pad")
            shape = tuple(n + p[2 * i] + p[2 * i + 1] for i, n in zip((2, 1, 0), shape))
        conv_pads = list(m.conv.padding) * 2
        x = g.op("Conv", [x, g.const(f"{name}.weight", _array(m.conv.weight, self.dtype)),
                          g.const(f"{name}.bias", _array(m.conv.bias, self.dtype))],
                 f"{name}.conv", kernel_shape=list(k), strides=list(s), pads=conv_pads)
        shape = tuple((n + 2 * p - kk) // ss + 1
                      for n, p, kk, ss in zip(shape, m.conv.padding, k, s))
        return (g.op("Relu", [x], f"{name}.relu") if m.relu else x), shape

    def maxpool(self, m: MaxPoolSame, x: str, shape: tuple[int, ...], name: str
                ) -> tuple[str, tuple[int, ...]]:
        p = same_pads(shape, m.kernel, m.stride)
        if any(p):
            x = self.pad(x, p, float("-inf"), f"{name}.pad")
            shape = tuple(n + p[2 * i] + p[2 * i + 1] for i, n in zip((2, 1, 0), shape))
        x = self.g.op("MaxPool", [x], name, kernel_shape=list(m.kernel), strides=list(m.stride))
        return x, tuple((n - k) // s + 1 for n, k, s in zip(shape, m.kernel, m.stride))

    def inception(self, m: Inception, x: str, shape: tuple[int, ...], name: str
                  ) -> tuple[str, tuple[int, ...]]:
        g = self.g
        r, _ = self.unit(m.reduce, x, shape, f"{name}.reduce")
        y0, y1, y2 = g.op_n("Split", [r, g.const(f"{name}.split", list(m.split), np.int64)],
                            f"{name}.split", 3, axis=1)
        y1, _ = self.unit(m.b1, y1, shape, f"{name}.b1")
        y2, _ = self.unit(m.b2, y2, shape, f"{name}.b2")
        pooled = g.op("MaxPool", [x], f"{name}.pool", kernel_shape=[3, 3, 3],
                      strides=[1, 1, 1], pads=[1] * 6)
        y3, _ = self.unit(m.b3, pooled, shape, f"{name}.b3")
        return g.op("Concat", [y0, y1, y2, y3], name, axis=1), shape

    def network(self, model: InceptionI3d, x: str, shape: tuple[int, ...]
                ) -> tuple[str, tuple[int, ...]]:
        """Every layer of ``model`` in order; returns the endpoint's value and ``(T', H', W')``."""
        for name, layer in model.layers.items():
            if isinstance(layer, Inception):
                x, shape = self.inception(layer, x, shape, name)
            elif isinstance(layer, MaxPoolSame):
                x, shape = self.maxpool(layer, x, shape, name)
            elif isinstance(layer, Unit3D) and name != "Logits":
                x, shape = self.unit(layer, x, shape, name)
            else:
                raise ConfigError(f"cannot export the I3D layer {name} "
                                  f"({type(layer).__name__}): export a feature-map endpoint")
        return x, shape


def features_graph(model: InceptionI3d, grid: int, clip_len: int, size: int,
                   precision: str = "fp32", metadata: dict[str, str] | None = None
                   ) -> onnx.ModelProto:
    """The feature extractor as one graph: ``clips`` ``(batch, 3, clip_len, size, size)``
    float32 in ``[-1, 1]`` -> ``features`` ``(batch, G*G, C)`` and ``motion`` ``(batch, G*G)``,
    both float32, cuboids in row-major order."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got "
                          f"{precision!r}")
    dtype = np.float16 if precision == "fp16" else np.float32
    g = GraphBuilder("stmil_features")
    clips = g.input("clips", [BATCH, 3, clip_len, size, size])
    x = g.op("Cast", [clips], "to_fp16", to=10) if dtype is np.float16 else clips
    fmap, (_, h, w) = _I3dLowering(g, dtype).network(model, x, (clip_len, size, size))
    if dtype is np.float16:
        fmap = g.op("Cast", [fmap], "to_fp32", to=1)
    pooled = adaptive_pool(g, g.op("ReduceMean", [fmap], "time_mean", axes=[2], keepdims=0),
                           (h, w), grid, "cuboid_pool")  # (B, C, G, G)
    n, c = grid * grid, endpoint_channels(model.endpoint)
    flat = g.op("Reshape", [pooled, g.const("cuboid_shape", [0, c, n], np.int64)], "cuboids")
    g.output(g.op("Transpose", [flat], "cuboids_last", perm=[0, 2, 1]), "features",
             [BATCH, n, c])
    g.output(_motion(g, clips, clip_len, size, grid), "motion", [BATCH, n])
    doc = ("stmil feature extractor: Inception-I3D RGB to the endpoint, then G x G cuboid "
           "pooling; motion energy of the same clips")
    return g.model(doc, metadata or {})


def _motion(g: GraphBuilder, clips: str, clip_len: int, size: int, grid: int) -> str:
    """Mean absolute difference of consecutive frames, over channels and time, pooled to
    G x G: ``(B, 3, T, S, S) -> (B, G*G)``."""
    def frames(start: int, end: int, name: str) -> str:
        return g.op("Slice", [clips, g.const(f"{name}.start", [start], np.int64),
                              g.const(f"{name}.end", [end], np.int64),
                              g.const(f"{name}.axis", [2], np.int64)], name)

    diff = g.op("Sub", [frames(1, clip_len, "later"), frames(0, clip_len - 1, "earlier")],
                "frame_diff")
    energy = g.op("ReduceMean", [g.op("Abs", [diff], "abs_diff")], "energy", axes=[1, 2],
                  keepdims=0)  # (B, S, S)
    pooled = adaptive_pool(g, energy, (size, size), grid, "motion_pool")
    return g.op("Reshape", [pooled, g.const("motion_shape", [0, grid * grid], np.int64)],
                "motion_flat")


def scorer_graph(detector: Detector, n_cuboids: int, metadata: dict[str, str] | None = None
                 ) -> onnx.ModelProto:
    """A run's scoring as one graph: ``features`` ``(batch, N, C)`` float32 (and ``motion``
    ``(batch, N)`` float32 for a run with a motion gate) -> ``maps`` ``(batch, N)`` float32,
    as :meth:`Detector.maps` computes them."""
    c = detector.config
    net = detector.scorer.net
    linears = [m for m in net if isinstance(m, nn.Linear)]
    known = (nn.Linear, nn.ReLU, nn.Sigmoid)
    odd = [type(m).__name__ for m in net if not isinstance(m, known)
           and type(m).__name__ != "BagDropout"]
    if odd or len(linears) != 3:
        raise ConfigError(f"cannot export this scorer: unexpected layers {odd or len(linears)}")
    g = GraphBuilder("stmil_scorer")
    feats = g.input("features", [BATCH, n_cuboids, c.in_dim])
    x = feats
    if c.grid == 1:  # one whole-frame instance: the mean of the clip's cuboids
        x = g.op("ReduceMean", [x], "frame_mean", axes=[1], keepdims=1)
    norm = g.op("ReduceL2", [x], "norm", axes=[-1], keepdims=1)
    x = g.op("Div", [x, g.op("Max", [norm, g.const("l2_eps", L2_EPS)], "norm_eps")], "l2")
    h = x
    for k, lin in enumerate(linears):
        h = g.op("MatMul", [h, g.const(f"fc{k}.weight", _array(lin.weight).T)], f"fc{k}")
        h = g.op("Add", [h, g.const(f"fc{k}.bias", _array(lin.bias))], f"fc{k}.bias_add")
        if k == 0:
            h = g.op("Relu", [h], "fc0.relu")
    s = g.op("Squeeze", [g.op("Sigmoid", [h], "sigmoid"),
                         g.const("last_axis", [-1], np.int64)], "scores")  # (B, N')
    gate = detector.scorer.gate
    if gate is not None:
        if not isinstance(gate, MemoryGate):
            raise ConfigError(f"cannot export the gate {type(gate).__name__}")
        s = g.op("Mul", [s, _memory_gate(g, gate, x)], "memory_gated")
    if c.grid == 1:  # fill every cell
        shape = g.op("Shape", [feats], "features_shape", start=0, end=2)
        s = g.op("Expand", [s, shape], "fill_cells")
    inputs_doc = "features"
    if c.motion == "gate":
        motion = g.input("motion", [BATCH, n_cuboids])
        ratio = g.op("Div", [motion, g.const("motion_scale", c.motion_scale)], "motion_ratio")
        s = g.op("Mul", [s, g.op("Min", [ratio, g.const("one", 1.0)], "motion_gate")],
                 "motion_gated")
        inputs_doc = "features and motion energy"
    g.output(s, "maps", [BATCH, n_cuboids])
    return g.model(f"stmil scorer: {inputs_doc} -> cuboid scores, as Detector.maps",
                   metadata or {})


def _memory_gate(g: GraphBuilder, gate: MemoryGate, x: str) -> str:
    """``((1 - max_m x . bank_m) - lo) / (hi - lo)`` clipped to ``[0, 1]``: ``(B, N', C) ->
    (B, N')``."""
    lo, hi = (np.float32(v) for v in gate.scale.detach().cpu().numpy())
    sim = g.op("MatMul", [x, g.const("memory.bank_t", _array(gate.bank).T)], "memory.sim")
    best = g.op("ReduceMax", [sim], "memory.best", axes=[-1], keepdims=0)
    novelty = g.op("Sub", [g.const("memory.one", 1.0), best], "memory.novelty")
    scaled = g.op("Div", [g.op("Sub", [novelty, g.const("memory.lo", lo)], "memory.shift"),
                          g.const("memory.range", np.float32(hi - lo))], "memory.scaled")
    return g.op("Clip", [scaled, g.const("memory.zero", 0.0), g.const("memory.clip_hi", 1.0)],
                "memory.gate")
