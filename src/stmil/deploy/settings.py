"""Settings of ``stmil export-model`` (:func:`stmil.deploy.export.export_model`), importable
without torch or onnx (:mod:`stmil.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stmil.deploy import FORMATS, PRECISIONS
from stmil.settings import Settings, setting


@dataclass(frozen=True)
class ExportModelOptions(Settings):
    """``stmil export-model``."""

    out: Path = setting(help="folder for features.onnx, scorer.onnx and manifest.json")
    model: Path | None = setting(None, "run folder: also export its scorer, memory and motion "
                                 "gates (scorer.onnx), and cut clips as it was trained")
    format: str = setting("onnx", "onnx (opset 17)", choices=FORMATS)
    precision: str = setting("fp32", "the feature graph's weights and arithmetic: fp32 "
                             "(matches PyTorch to ~1e-6) or fp16 (half the file, for GPUs; the "
                             "scorer stays fp32)", choices=PRECISIONS)
