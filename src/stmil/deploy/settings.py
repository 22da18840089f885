"""Settings of ``stmil export-model`` (:func:`stmil.deploy.export.export_model`), importable
without torch or onnx (:mod:`stmil.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stmil.deploy import FORMATS, PRECISIONS
from stmil.settings import Settings, require, setting


@dataclass(frozen=True)
class ExportModelOptions(Settings):
    """``stmil export-model``."""

    out: Path = setting(help="folder for features.onnx, scorer.onnx and manifest.json")
    model: Path | None = setting(None, "run folder: also export its scorer, memory and motion "
                                 "gates (scorer.onnx), and cut clips as it was trained")


@dataclass(frozen=True)
class ModelFormat(Settings):
    """What ``stmil export-model`` writes: the graphs' format, the feature graph's precision
    and, for int8, the videos that calibrate it."""

    format: str = setting("onnx", "onnx (opset 17), or openvino (IR converted from the checked "
                          "ONNX graphs; stmil[openvino])", choices=FORMATS)
    precision: str = setting("fp32", "the feature graph's weights and arithmetic: fp32 (matches "
                             "PyTorch to ~1e-6), fp16 (half the file, for GPUs) or int8 "
                             "(OpenVINO, quantised by NNCF on --calibration videos); the scorer "
                             "stays fp32", choices=PRECISIONS)
    calibration: list[Path] | None = setting(None, "videos of your own cameras whose first clips "
                                             "calibrate --precision int8", metavar="VIDEO")

    def rules(self) -> None:
        require(self.precision != "int8" or (self.format == "openvino"
                                             and bool(self.calibration)),
                "{precision} int8 quantises an OpenVINO graph on clips of your own videos: add "
                "{format} openvino {calibration} VIDEOS", "precision", "format", "calibration")
        require(self.calibration is None or self.precision == "int8",
                "{calibration} is for {precision} int8", "calibration", "precision")

    @property
    def graph_precision(self) -> str:
        """The precision of the ONNX graphs (int8 quantises an fp32 one)."""
        return "fp32" if self.precision == "int8" else self.precision
