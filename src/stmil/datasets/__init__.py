"""Dataset loaders: each format on disk -> a list of :class:`VideoRecord`.

Formats (see ``docs/formats.md``): ``ucf_crime`` (UCF-Crime lists and temporal annotation),
``crime2local`` (UCF-Crime2Local splits and VATIC boxes) and ``folder`` (``normal/`` and
``anomalous/`` with an optional ``annotations.json``). All frames are 0-based and every interval
is half-open ``(start, end)`` at the video's native frame rate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stmil.datasets.bounds import fit_to_video
from stmil.datasets.crime2local import load_crime2local, looks_like_crime2local
from stmil.datasets.errors import DatasetError, check_split
from stmil.datasets.folder import ANOMALOUS_DIR, NORMAL_DIR, load_folder, looks_like_folder
from stmil.datasets.layout import TEMPORAL, TEST_LIST, TRAIN_LIST, split_file
from stmil.datasets.record import VideoRecord
from stmil.datasets.ucf_crime import load_ucf_crime, looks_like_ucf_crime

__all__ = ["FORMATS", "DatasetError", "VideoRecord", "detect_format", "fit_to_video",
           "load_dataset"]

_LOADERS: dict[str, Callable[[Path, str], list[VideoRecord]]] = {
    "ucf_crime": load_ucf_crime,
    "crime2local": load_crime2local,
    "folder": load_folder,
}
FORMATS = tuple(_LOADERS)

# Checked in this order: a Crime2Local root may also hold UCF-Crime files.
_DETECTORS: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    ("crime2local", looks_like_crime2local),
    ("ucf_crime", looks_like_ucf_crime),
    ("folder", looks_like_folder),
)


def _existing_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    return root


def detect_format(root: str | Path) -> str:
    """Name the format of the dataset in ``root`` from the files present.

    - ``crime2local``: ``Train_split_AD.txt`` or ``Test_split_AD.txt`` in ``root/readme`` or
      ``root``;
    - ``ucf_crime``: ``Anomaly_Train.txt``, ``Anomaly_Test.txt`` or
      ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt`` in ``root`` or up to two levels
      below;
    - ``folder``: a ``normal/`` or ``anomalous/`` subfolder.
    """
    root = _existing_dir(root)
    for name, looks_like in _DETECTORS:
        if looks_like(root):
            return name
    raise DatasetError(
        f"{root}: no known dataset format found; expected UCF-Crime2Local "
        f"({split_file('train')}), UCF-Crime ({TRAIN_LIST}, {TEST_LIST} or {TEMPORAL}) or a "
        f"folder with {NORMAL_DIR}/ and {ANOMALOUS_DIR}/ subfolders"
    )


def load_dataset(root: str | Path, split: str = "train", format: str = "auto") -> list[VideoRecord]:
    """Load the ``train``, ``test`` or ``all`` videos of the dataset in ``root``.

    ``format`` is ``auto`` (see :func:`detect_format`) or one of :data:`FORMATS`. Raises
    :class:`DatasetError` for a missing root, an unknown format or split, a malformed file
    (``"<file>:<line>: ..."``), an empty split or a video id that appears twice.
    """
    check_split(split)
    if format != "auto" and format not in _LOADERS:
        raise DatasetError(f"format must be auto or one of {', '.join(FORMATS)}, got {format!r}")
    root = _existing_dir(root)
    name = detect_format(root) if format == "auto" else format
    return _LOADERS[name](root, split)
