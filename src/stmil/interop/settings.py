"""Settings of ``stmil gt``, ``export``, ``export-features`` and ``import-features`` besides
:class:`~stmil.interop.import_features.ImportSettings` (:mod:`stmil.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stmil.datasets.errors import SPLITS
from stmil.interop import CONVENTIONS, LAYOUTS, TAILS
from stmil.mil.config import FORMATS
from stmil.settings import Settings, setting


@dataclass(frozen=True)
class VectorOptions(Settings):
    """``stmil gt`` and ``stmil export`` (:func:`stmil.interop.gt.export_vectors`)."""

    data: Path = setting(help="dataset root (its test list gives the order)")
    features: Path = setting(help="folder of feature files")
    out: Path = setting(help="folder for the .npy and its .json manifest")
    split: str = setting("test", "dataset split", choices=SPLITS)
    format: str = setting("auto", "dataset layout", choices=FORMATS)
    tail: str = setting("clips", "clips: stride x n_clips entries per video (16 x T, the "
                        "RTFM/UR-DMU convention); frames: one per frame of the video",
                        choices=TAILS)
    skip_missing: bool = setting(False, "leave out listed videos that have no features")
    list: Path | None = setting(None, "an RTFM / UR-DMU / MGFN list (ucf-i3d-test.list, "
                                "UCF_Test.list): write the videos in its order (it must name "
                                "exactly the split's videos); default: the dataset's list "
                                "order")


@dataclass(frozen=True)
class GtOptions(Settings):
    """``stmil gt``'s own flag."""

    convention: str = setting("stmil", "stmil: UCF-Crime's 1-based 's e' is frames s-1..e-1; "
                              "rtfm: RTFM's make_gt_ucf.py rule (frames s..e, its gt-ucf.npy), "
                              "to compare with published numbers", choices=CONVENTIONS)


@dataclass(frozen=True)
class ScoresOptions(Settings):
    """``stmil export``'s own flag."""

    model: Path = setting(help="run folder")


@dataclass(frozen=True)
class ExportFeaturesOptions(Settings):
    """``stmil export-features`` (:func:`stmil.interop.export.export_features`)."""

    features: Path = setting(help="folder of stmil feature files", positional=True)
    out: Path = setting(help="folder for the .npy files, the lists and export.json")
    layout: str = setting("plain", "plain: <id>.npy (T, C) and features.list; rtfm: "
                          "<id>_i3d.npy (T, 10, C), ucf-i3d.list and ucf-i3d-test.list; urdmu: "
                          "ten <id>__<k>.npy (T, C), UCF_Train.list and UCF_Test.list (needs "
                          "--data)", choices=LAYOUTS)
    data: Path | None = setting(None, "dataset root: labels and splits (train list anomalous "
                                "first) and the test order of stmil gt")
    format: str = setting("auto", "--data's format", choices=FORMATS)
    list: Path | None = setting(None, "an RTFM / UR-DMU list giving the test videos' order (and "
                                "UR-DMU's crop lines); with --layout plain, the videos and "
                                "their order")
    prefix: str | None = setting(None, "write list entries as PREFIX/<file> (default: absolute "
                                 "paths, which resolve from any working directory)")


@dataclass(frozen=True)
class ImportOptions(Settings):
    """``stmil import-features``'s inputs and outputs (the rest: ``ImportSettings``)."""

    inputs: list[Path] = setting(help=".list files, feature files or folders", positional=True)
    out: Path = setting(help="output folder for <id>.npy and <id>.json")
    root: Path | None = setting(None, "folder the .list paths are relative to (default: the "
                                "list's)")
    frame_counts: Path | None = setting(None, "text file of '<video> <n_frames>' lines: place "
                                        "the features on the real frames (needed for Sultani's "
                                        "32 segments); videos it leaves out keep "
                                        "--snippet-frames a snippet, Sultani files are refused")
