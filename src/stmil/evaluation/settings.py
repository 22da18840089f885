"""Settings of ``stmil evaluate`` (:func:`stmil.evaluation.evaluate.evaluate`), checked by the
one validation engine (:mod:`stmil.settings`) and importable without torch or scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stmil.datasets.errors import SPLITS
from stmil.mil.config import FORMATS
from stmil.settings import Settings, setting


@dataclass(frozen=True)
class EvaluateOptions(Settings):
    """``stmil evaluate``: a run on a dataset split, or ``--compare`` of stored metrics."""

    data: Path | None = setting(None, "dataset root")
    features: Path | None = setting(None, "folder of feature files")
    model: Path | None = setting(None, "run folder")
    split: str = setting("test", "dataset split", choices=SPLITS)
    format: str = setting("auto", "dataset layout", choices=FORMATS)
    overlap: float = setting(0.25, "cuboid positive when a GT box covers this fraction of it",
                             lo=0, lo_open=True, hi=1)
    threshold: float | None = setting(None, "score threshold of false_alarm_rate, tiou and "
                                      "loc_false_positives (default: the run's calibrated "
                                      "threshold, else 0.5, the papers')", lo=0, hi=1)
    skip_missing: bool = setting(False, "leave out listed videos that have no features")
    json: Path | None = setting(None, "also write the metrics here")
    compare: list[Path] | None = setting(None, "print a table across runs", metavar="RUN")
    boxes: Path | None = setting(None, "Liu & Ma's UCF-Crime box pickle (e.g. "
                                 "Test_annotation.pkl)")
    interpolate: bool = setting(False, "with --boxes: interpolate boxes between annotated "
                                "frames")
