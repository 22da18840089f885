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

from stmil.features.pipeline_config import BACKENDS

#: ``export-model --format``: ONNX graphs, or OpenVINO IR converted from them.
FORMATS = ("onnx", "openvino")
#: ``export-model --precision``: the feature graph's weights and arithmetic (the scorer stays
#: fp32); int8: OpenVINO only, quantised by NNCF on ``--calibration`` videos.
PRECISIONS = ("fp32", "fp16", "int8")
__all__ = ["BACKENDS", "FORMATS", "PRECISIONS"]
