"""A plain folder of the user's own videos: ``normal/`` and ``anomalous/``.

Layout::

    root/
      normal/        videos of normal activity (label 0), searched recursively
      anomalous/     videos containing an anomaly (label 1), searched recursively
      annotations.json   optional

Videos are files ending in .mp4 .avi .mkv .webm .mov .gif .m4v .mpg .mpeg .flv (any case);
hidden files and folders are skipped. A video's id is its file stem, so stems must be unique
across both folders. The category is the first subfolder below ``anomalous/``
(``anomalous/Fighting/a.mp4`` -> ``Fighting``), ``""`` for a video directly in ``anomalous/``,
and ``Normal`` for every normal video.

``annotations.json`` maps a video id to any of three optional keys; frames are 0-based and
intervals half-open (``[10, 20]`` covers frames 10..19)::

    {
      "Fight01": {
        "intervals": [[120, 300], [500, 560]],
        "boxes": [[120, 10, 20, 110, 200], [121, 12, 20, 112, 201]],
        "split": "test"
      }
    }

- ``intervals``: ``[start, end]`` pairs of integers with ``0 <= start < end``.
- ``boxes``: ``[frame, x1, y1, x2, y2]`` rows, pixel corners in the original frame; several rows
  may share a frame. When ``intervals`` is absent, the intervals are the maximal runs of
  consecutive frames that have a box (the UCF-Crime2Local rule).
- ``split``: ``"train"`` or ``"test"``. A video without one is in ``"train"``.

Normal videos may only carry ``split``. Unknown keys, and ids that match no video, are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stmil import safejson
from stmil.datasets.bounds import box_problem
from stmil.datasets.errors import DatasetError, check_records, check_split
from stmil.datasets.layout import NORMAL_CATEGORY
from stmil.datasets.record import Box, VideoRecord
from stmil.files import VIDEO_EXTENSIONS, find_videos
from stmil.settings import in_file, number_array, require

NORMAL_DIR = "normal"
ANOMALOUS_DIR = "anomalous"
ANNOTATIONS = "annotations.json"
_KEYS = ("intervals", "boxes", "split")


class VideoIndex:
    """The videos below a folder, looked up by file name or by stem; built once, on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_name: dict[str, Path] | None = None
        self._by_stem: dict[str, Path] = {}

    def find(self, name: str) -> Path | None:
        """The first video (in sorted path order) whose file name or stem is ``name``."""
        if self._by_name is None:
            self._by_name = {}
            for path in find_videos(self.root):
                self._by_name.setdefault(path.name, path)
                self._by_stem.setdefault(path.stem, path)
        return self._by_name.get(name) or self._by_stem.get(name)


def frames_to_intervals(frames: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Maximal runs of consecutive frames as half-open intervals: ``{3, 4, 5, 9}`` -> ``((3, 6),
    (9, 10))``."""
    intervals: list[tuple[int, int]] = []
    for frame in sorted(set(frames)):
        if intervals and intervals[-1][1] == frame:
            intervals[-1] = (intervals[-1][0], frame + 1)
        else:
            intervals.append((frame, frame + 1))
    return tuple(intervals)


def looks_like_folder(root: Path) -> bool:
    """Whether ``root`` has a ``normal/`` or an ``anomalous/`` subfolder."""
    return (root / NORMAL_DIR).is_dir() or (root / ANOMALOUS_DIR).is_dir()


@dataclass(frozen=True)
class FolderAnnotation:
    """One entry of ``annotations.json``, validated; frames 0-based."""

    intervals: tuple[tuple[int, int], ...] = ()
    boxes: dict[int, list[Box]] = field(default_factory=dict)
    split: str | None = None
    box_where: dict[int, tuple[str, ...]] = field(default_factory=dict, compare=False)
    interval_where: tuple[str, ...] = field(default=(), compare=False)


INTERVAL = "[start, end] whole numbers with 0 <= start < end (0-based, end exclusive)"
BOX = "[frame, x1, y1, x2, y2] with a whole frame >= 0 and finite corners"


def _items(where: str, key: str, value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise DatasetError(f"{where}: {key} must be a list, each {what}, got {value!r}")
    return value


def _parse_intervals(where: str, value: Any) -> list[tuple[tuple[int, int], str]]:
    """``(interval, where)`` pairs, sorted by interval."""
    out = []
    for i, item in enumerate(_items(where, "intervals", value, INTERVAL)):
        name = f"intervals[{i}]"
        with in_file(where, error=DatasetError):  # the engine's array rule, then start < end
            start, end = number_array(name, item, (2,), integer=True, lo=0, what=INTERVAL)
            require(start < end, "{" + name + "} must be " + INTERVAL + f", got {item!r}", name)
        out.append(((int(start), int(end)), f"{where}: {name}"))
    return sorted(out)


def _parse_boxes(
    where: str, value: Any
) -> tuple[dict[int, list[Box]], dict[int, tuple[str, ...]]]:
    """Boxes by frame, and where each was read (``"<where>: boxes[i]"``), by frame."""
    boxes: dict[int, list[Box]] = {}
    places: dict[int, list[str]] = {}
    for i, item in enumerate(_items(where, "boxes", value, BOX)):
        name = f"boxes[{i}]"
        with in_file(where, error=DatasetError):  # 5 numbers, the first a frame index
            number_array(name, item, (5,), what=BOX)
            frame = int(number_array(name, item[:1], (1,), integer=True, lo=0, what=BOX)[0])
        box = tuple(float(v) for v in item[1:])
        problem = box_problem(box)
        if problem:
            raise DatasetError(f"{where}: {name} must be {problem}, got {item!r}")
        boxes.setdefault(frame, []).append(box)
        places.setdefault(frame, []).append(f"{where}: {name}")
    return dict(sorted(boxes.items())), {f: tuple(w) for f, w in sorted(places.items())}


def parse_annotation(where: str, entry: Any) -> FolderAnnotation:
    """Validate one ``annotations.json`` entry; ``where`` prefixes error messages."""
    if not isinstance(entry, dict):
        keys = ", ".join(_KEYS)
        raise DatasetError(f"{where}: expected an object with keys {keys}, got {entry!r}")
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise DatasetError(f"{where}: unknown keys {unknown}; allowed: {', '.join(_KEYS)}")
    split = entry.get("split")
    if split is not None and split not in ("train", "test"):
        raise DatasetError(f"{where}: split: expected 'train' or 'test', got {split!r}")
    boxes, box_where = _parse_boxes(where, entry.get("boxes", []))
    if "intervals" in entry:
        pairs = _parse_intervals(where, entry["intervals"])
        intervals = tuple(p for p, _ in pairs)
        interval_where = tuple(w for _, w in pairs)
    else:
        intervals = frames_to_intervals(boxes)
        interval_where = tuple(box_where[s][0] for s, _ in intervals)
    return FolderAnnotation(intervals=intervals, boxes=boxes, split=split, box_where=box_where,
                            interval_where=interval_where)


def read_annotations(path: Path) -> dict[str, FolderAnnotation]:
    """Read and validate ``annotations.json``: video id -> annotation."""
    try:
        data = safejson.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        problem = f"{err.msg} at column {err.colno}"
        raise DatasetError(f"{path}:{err.lineno}: valid JSON, got {problem}") from err
    except ValueError as err:  # safejson's: nested too deeply
        raise DatasetError(f"{path}: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot be read ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object mapping video ids to annotations")
    return {vid: parse_annotation(f"{path}: {vid!r}", entry) for vid, entry in data.items()}


def _scan(root: Path) -> dict[str, tuple[Path, int, str]]:
    """Video id -> (path, label, category) for every video under normal/ and anomalous/."""
    videos: dict[str, tuple[Path, int, str]] = {}
    for sub, label in ((NORMAL_DIR, 0), (ANOMALOUS_DIR, 1)):
        for path in find_videos(root / sub):
            parts = path.relative_to(root / sub).parts
            category = NORMAL_CATEGORY if label == 0 else (parts[0] if len(parts) > 1 else "")
            if path.stem in videos:
                raise DatasetError(
                    f"{root}: two videos share the id {path.stem!r}: {videos[path.stem][0]} and "
                    f"{path}; ids (file stems) must be unique"
                )
            videos[path.stem] = (path, label, category)
    return videos


def load_folder(root: str | Path, split: str = "train") -> list[VideoRecord]:
    """Load a ``normal/`` + ``anomalous/`` folder (see the module docstring for the format)."""
    root = Path(root)
    check_split(split)
    videos = _scan(root)
    if not videos:
        exts = " ".join(VIDEO_EXTENSIONS)
        raise DatasetError(f"{root}: no videos ({exts}) under {NORMAL_DIR}/ or {ANOMALOUS_DIR}/")
    ann_path = root / ANNOTATIONS
    annotations = read_annotations(ann_path) if ann_path.is_file() else {}
    unknown = sorted(set(annotations) - set(videos))
    if unknown:
        raise DatasetError(
            f"{ann_path}: ids match no video under {NORMAL_DIR}/ or "
            f"{ANOMALOUS_DIR}/: {', '.join(unknown)}"
        )
    records = []
    for vid, (path, label, category) in videos.items():
        ann = annotations.get(vid, FolderAnnotation())
        if label == 0 and (ann.intervals or ann.boxes):
            raise DatasetError(
                f"{ann_path}: {vid!r} is under {NORMAL_DIR}/ but has intervals "
                "or boxes; only anomalous videos can"
            )
        rec = VideoRecord(
            video_id=vid,
            label=label,
            path=path,
            split=ann.split or "train",
            category=category,
            intervals=ann.intervals,
            boxes=ann.boxes,
            box_where=ann.box_where,
            interval_where=ann.interval_where,
        )
        if split in ("all", rec.split):
            records.append(rec)
    hint = f'mark videos with "split": "{split}" in {ANNOTATIONS}'
    return check_records(records, root, split, hint=hint)
