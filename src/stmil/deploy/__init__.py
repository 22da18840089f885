"""Deployable models: the feature extractor and a run's scorer as ONNX graphs, with a manifest
that tells a runtime everything it needs (``stmil export-model``; docs/deploy.md).

:mod:`~stmil.deploy.builder` lowers plain tensors to ONNX nodes, :mod:`~stmil.deploy.graphs`
lowers the I3D network with cuboid pooling and the scorer with its gates,
:mod:`~stmil.deploy.manifest` is the one reader and writer of ``manifest.json``,
:mod:`~stmil.deploy.export` writes an export folder and :mod:`~stmil.deploy.runtime` runs one
with ONNX Runtime.

The choices below are importable without torch or onnx (the CLI's flags and the settings
classes use them).
"""

from __future__ import annotations

import os

from stmil.errors import ConfigError

#: ``export-model --format``.
FORMATS = ("onnx",)
#: ``export-model --precision``: the feature graph's weights and arithmetic (the scorer stays
#: fp32).
PRECISIONS = ("fp32", "fp16")
#: ``--backend`` of ``extract``, ``score`` and ``watch``: PyTorch, or an exported model run by
#: ONNX Runtime.
BACKENDS = ("torch", "onnxruntime")


def check_backend(backend: object, exported: object = None) -> str | None:
    """``exported`` as a string (or None), after checking that ``backend`` is one of
    :data:`BACKENDS` and ``exported`` (an export folder whose feature graph computes the
    features: ``--exported``) is None or a path given with an exported backend (PyTorch runs
    its own network). :class:`ConfigError` otherwise."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if exported is None:
        return None
    if not isinstance(exported, (str, os.PathLike)) or not str(exported):
        raise ConfigError(f"exported must be the path of an export folder, got {exported!r}")
    if backend == "torch":
        raise ConfigError("--exported runs an exported feature graph, which --backend torch "
                          "does not: add --backend onnxruntime, or drop --exported")
    return os.fspath(exported)
