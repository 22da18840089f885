"""UCF-Crime (Sultani, Chen and Shah, CVPR 2018): split lists and temporal annotations.

Files, looked up in ``root``, then ``root/Anomaly_Detection_splits``, then any folder one or two
levels below ``root`` (first in sorted order):

- ``Anomaly_Train.txt``: one video per line, relative to the dataset's video folder, e.g.
  ``Arrest/Arrest001_x264.mp4`` or ``Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4``.
- ``Anomaly_Test.txt``: the same for the test videos (normal ones under
  ``Testing_Normal_Videos_Anomaly/``).
- ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt``: whitespace-separated
  ``Name_x264.mp4  Class  s1  e1  s2  e2``; ``-1 -1`` marks an absent interval and Class
  ``Normal`` a normal video (all four numbers ``-1``). More ``s e`` pairs are accepted.

Labels: a video under a folder whose name contains ``normal`` (any case) is normal (label 0,
category ``Normal``); every other video is anomalous, with its folder name as category. A line
without a folder is normal when its file name starts with ``Normal``. The video id is the file
stem (``Arrest001_x264``).

Frame convention: the temporal annotation counts frames at the native 30 fps, 1-based and
inclusive, as Sultani's MATLAB evaluation reads it (``gt(s:e) = 1``). An annotated ``s e`` becomes
the 0-based half-open interval ``(s - 1, e)``; a start of ``0`` is read as the first frame.

Splits: ``train`` is ``Anomaly_Train.txt`` (no temporal annotation exists for it). ``test`` is
``Anomaly_Test.txt`` with intervals from the temporal file; without ``Anomaly_Test.txt`` the
temporal file alone defines the test split. A test video whose list folder and annotated Class
disagree is refused. ``n_frames`` is ``None``: these files do not state it.

Video paths: ``root/<line>`` when that file exists, else the first file of that name anywhere
below ``root`` (one index of the tree, built on first need), else ``None``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stmil.datasets.errors import DatasetError, check_records, check_split, malformed, read_lines
from stmil.datasets.folder import VideoIndex
from stmil.datasets.layout import NORMAL_CATEGORY, SPLITS_DIR, TEMPORAL, TEST_LIST, TRAIN_LIST
from stmil.datasets.record import VideoRecord
from stmil.files import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListEntry:
    """One line of a split list."""

    lineno: int
    rel: PurePosixPath  # the line as a relative path
    video_id: str
    label: int
    category: str


@dataclass(frozen=True)
class TemporalRow:
    """One row of the temporal annotation; intervals 0-based half-open."""

    lineno: int
    video_id: str
    category: str
    intervals: tuple[tuple[int, int], ...]
    where: str = ""  # "file:line", for error messages

    @property
    def interval_where(self) -> tuple[str, ...]:
        return (self.where,) * len(self.intervals)


def find_file(root: Path, name: str) -> Path | None:
    """``root/name``, ``root/Anomaly_Detection_splits/name``, else the first one or two levels
    down."""
    for candidate in (root / name, root / SPLITS_DIR / name):
        if candidate.is_file():
            return candidate
    for pattern in (f"*/{name}", f"*/*/{name}"):
        hits = sorted(p for p in root.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
    return None


def looks_like_ucf_crime(root: Path) -> bool:
    """Whether any of the three UCF-Crime annotation files is present."""
    return any(find_file(root, name) for name in (TRAIN_LIST, TEST_LIST, TEMPORAL))


def video_stem(name: str) -> str:
    """``Arrest001_x264.mp4`` -> ``Arrest001_x264``; a name without video extension is kept."""
    path = PurePosixPath(name)
    return path.stem if path.suffix.lower() in VIDEO_EXTENSIONS else path.name


def parse_list(path: Path) -> list[ListEntry]:
    """Read ``Anomaly_Train.txt`` / ``Anomaly_Test.txt``."""
    entries = []
    for lineno, line in read_lines(path):
        if len(line.split()) != 1:
            expected = "one video path per line, like 'Arrest/Arrest001_x264.mp4'"
            raise malformed(path, lineno, expected, line)
        rel = PurePosixPath(line.replace("\\", "/"))
        folders = rel.parts[:-1]
        if folders:
            normal = any("normal" in part.lower() for part in folders)
        else:
            normal = rel.name.lower().startswith("normal")
        category = NORMAL_CATEGORY if normal else (folders[-1] if folders else "")
        entries.append(ListEntry(lineno, rel, video_stem(rel.name), 0 if normal else 1, category))
    return entries


def _parse_pair(path: Path, lineno: int, line: str, s: int, e: int) -> tuple[int, int] | None:
    """A 1-based inclusive ``s e`` pair -> 0-based half-open, or None for ``-1 -1``."""
    if s == -1 and e == -1:
        return None
    if s < 0 or e < max(s, 1):
        expected = "frame pairs 's e' with 1 <= s <= e (1-based, inclusive) or '-1 -1'"
        raise malformed(path, lineno, expected, line)
    return (max(s - 1, 0), e)


def parse_temporal(path: Path) -> dict[str, TemporalRow]:
    """Read ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt``: video id -> row."""
    rows: dict[str, TemporalRow] = {}
    for lineno, line in read_lines(path):
        fields = line.split()
        if len(fields) < 4 or len(fields) % 2:
            expected = "6 whitespace-separated columns 'Name_x264.mp4 Class s1 e1 s2 e2'"
            raise malformed(path, lineno, expected, line)
        try:
            numbers = [int(v) for v in fields[2:]]
        except ValueError:
            raise malformed(path, lineno, "integer frame numbers after the class", line) from None
        pairs = [
            _parse_pair(path, lineno, line, s, e)
            for s, e in zip(numbers[::2], numbers[1::2], strict=True)
        ]
        intervals = tuple(sorted(p for p in pairs if p is not None))
        video_id, category = video_stem(fields[0]), fields[1]
        if category == NORMAL_CATEGORY and intervals:
            raise malformed(path, lineno, "only -1 for a Normal video", line)
        if video_id in rows:
            raise malformed(
                path, lineno, f"each video once (also on line {rows[video_id].lineno})", line
            )
        rows[video_id] = TemporalRow(lineno, video_id, category, intervals, f"{path}:{lineno}")
    return rows


def _check_agreement(list_path: Path, entry: ListEntry, temporal: Path, row: TemporalRow) -> None:
    if (row.category == NORMAL_CATEGORY) != (entry.label == 0):
        kind = "normal" if entry.label == 0 else "anomalous"
        raise DatasetError(
            f"{list_path}:{entry.lineno}: {entry.rel} is listed as {kind} but "
            f"{temporal}:{row.lineno} gives class {row.category!r}"
        )


def _record(
    entry: ListEntry, split: str, path: Path | None, row: TemporalRow | None
) -> VideoRecord:
    category = entry.category or (row.category if row else "")
    return VideoRecord(
        video_id=entry.video_id,
        label=entry.label,
        path=path,
        split=split,
        category=category,
        intervals=row.intervals if row else (),
        interval_where=row.interval_where if row else (),
    )


def _locate(root: Path, rel: PurePosixPath, index: VideoIndex) -> Path | None:
    direct = root.joinpath(*rel.parts)
    return direct if direct.is_file() else index.find(rel.name)


def _train(root: Path, index: VideoIndex) -> list[VideoRecord]:
    path = find_file(root, TRAIN_LIST)
    if path is None:
        raise DatasetError(f"{root}: no {TRAIN_LIST} in it or its subfolders")
    return [_record(e, "train", _locate(root, e.rel, index), None) for e in parse_list(path)]


def _test_from_temporal(rows: dict[str, TemporalRow], index: VideoIndex) -> list[VideoRecord]:
    records = []
    for row in rows.values():
        label = 0 if row.category == NORMAL_CATEGORY else 1
        records.append(
            VideoRecord(
                video_id=row.video_id,
                label=label,
                split="test",
                path=index.find(row.video_id),
                category=row.category,
                intervals=row.intervals,
                interval_where=row.interval_where,
            )
        )
    return records


def _test(root: Path, index: VideoIndex) -> list[VideoRecord]:
    list_path, temporal = find_file(root, TEST_LIST), find_file(root, TEMPORAL)
    if list_path is None and temporal is None:
        raise DatasetError(f"{root}: neither {TEST_LIST} nor {TEMPORAL} in it or its subfolders")
    rows = parse_temporal(temporal) if temporal else {}
    if list_path is None:
        return _test_from_temporal(rows, index)
    records = []
    for entry in parse_list(list_path):
        row = rows.pop(entry.video_id, None)
        if row is not None:
            _check_agreement(list_path, entry, temporal, row)
        elif temporal is not None and entry.label == 1:
            log.warning(
                "%s: anomalous test video %s has no row in %s", list_path, entry.rel, temporal
            )
        records.append(_record(entry, "test", _locate(root, entry.rel, index), row))
    if rows:
        log.warning(
            "%s: %d annotated videos are not in %s and are ignored (e.g. %s)",
            temporal,
            len(rows),
            list_path,
            next(iter(rows)),
        )
    return records


def load_ucf_crime(root: str | Path, split: str = "train") -> list[VideoRecord]:
    """Load UCF-Crime's ``train``, ``test`` or ``all`` (train then test) videos."""
    root = Path(root)
    check_split(split)
    index = VideoIndex(root)
    records: list[VideoRecord] = []
    if split in ("train", "all"):
        records += _train(root, index)
    if split in ("test", "all"):
        records += _test(root, index)
    return check_records(records, root, split)
