"""UCF-Crime2Local (Landi, Snoek and Cucchiara, 2019): split lists and per-video VATIC boxes.

Layout (the split files and ``Txt annotations/`` are looked up in ``root/readme`` first, then in
``root``)::

    root/
      readme/Train_split_AD.txt     one video per line
      readme/Test_split_AD.txt
      readme/Txt annotations/<Video>.txt    VATIC boxes of each anomalous video
      videos/<Video>_x264.mp4       (any of .mp4 .avi .mkv .webm ..., searched recursively)

Split lines may read ``Arrest001``, ``Arrest001_x264``, ``Arrest001_x264.mp4`` or
``Arrest/Arrest001_x264.mp4``. Box files and videos are matched by the line's stem with and
without the ``_x264`` suffix (``Arrest001.txt`` and ``Arrest001_x264.txt`` both work). The video
id is the stem of the video file when one is found, else the stem of the split line. The category
is the line's folder, else the leading letters of its name (``Arrest``); ``Normal`` for normal
videos. ``n_frames`` is ``None``.

VATIC box files: one row per track and frame, whitespace-separated::

    track_id xmin ymin xmax ymax frame lost occluded generated "label" ["attribute" ...]

``lost = 1`` means the object is outside the view: such rows carry no box and are skipped.
Occluded and generated (interpolated) rows are kept. A video is anomalous (label 1) iff it has a
box file with at least one row that is not lost; other videos are normal (their names usually
contain ``Normal``). The anomaly's temporal extent is the set of frames with a visible box, cut
into maximal runs of consecutive frames: those runs are the intervals (0-based, half-open).

Frame base: VATIC writes 0-based frame numbers, but converted files exist that count from 1.
Rule: a file whose smallest frame number over all rows (lost ones included) is exactly 1 is
1-based; any other file is 0-based. Pass ``frame_base=0`` or ``1`` to override the detection.
``detect_vatic_base`` and ``read_vatic(...).frame_base`` expose the base of one file, and the
loader logs how many files of each base it read.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stmil.atomic import write_text
from stmil.datasets.bounds import box_problem
from stmil.datasets.errors import DatasetError, check_records, check_split, malformed, read_lines
from stmil.datasets.folder import VideoIndex, frames_to_intervals
from stmil.datasets.layout import (
    BOX_DIR,
    NORMAL_CATEGORY,
    README_DIR,
    SPLIT_FILES,
    VIDEOS_DIR,
    X264,
)
from stmil.datasets.record import Box, VideoRecord
from stmil.datasets.ucf_crime import video_stem

log = logging.getLogger(__name__)

_VATIC_COLUMNS = 'track_id xmin ymin xmax ymax frame lost occluded generated "label"'


@dataclass(frozen=True)
class VaticRow:
    """One row of a VATIC file, frame number as written."""

    lineno: int
    text: str
    track_id: int
    box: Box
    frame: int
    lost: bool
    occluded: bool
    generated: bool


@dataclass(frozen=True)
class VaticAnnotation:
    """The visible boxes of one VATIC file, converted to 0-based frames."""

    boxes: dict[int, list[Box]]
    intervals: tuple[tuple[int, int], ...]
    frame_base: int  # 0 or 1: how the file counts frames
    box_where: dict[int, tuple[str, ...]] = field(default_factory=dict)  # "file:line" per box


def _parse_vatic_line(path: Path, lineno: int, line: str) -> VaticRow:
    fields = line.split(maxsplit=9)
    if len(fields) < 10 or not fields[9].startswith('"'):
        expected = f'at least 10 columns "{_VATIC_COLUMNS}" ["attributes" ...]'
        raise malformed(path, lineno, expected, line)
    try:
        track_id, frame, lost, occluded, generated = (int(fields[i]) for i in (0, 5, 6, 7, 8))
        x1, y1, x2, y2 = (float(v) for v in fields[1:5])
    except ValueError:
        expected = "integer track_id, frame and flags and numeric box corners"
        raise malformed(path, lineno, expected, line) from None
    if frame < 0 or not {lost, occluded, generated} <= {0, 1}:
        raise malformed(
            path, lineno, "a frame >= 0 and lost/occluded/generated flags of 0 or 1", line
        )
    problem = None if lost else box_problem((x1, y1, x2, y2))  # a lost row carries no box
    if problem:
        raise malformed(path, lineno, problem, line)
    return VaticRow(
        lineno, line, track_id, (x1, y1, x2, y2), frame, bool(lost), bool(occluded), bool(generated)
    )


def parse_vatic(path: Path) -> list[VaticRow]:
    """Every row of a VATIC text file, lost ones included."""
    return [_parse_vatic_line(path, lineno, line) for lineno, line in read_lines(path)]


def vatic_base(rows: list[VaticRow]) -> int:
    """1 if the smallest frame number is exactly 1, else 0 (see the module docstring)."""
    return 1 if rows and min(r.frame for r in rows) == 1 else 0


def detect_vatic_base(path: str | Path) -> int:
    """How a VATIC file counts frames: 0 or 1."""
    return vatic_base(parse_vatic(Path(path)))


def read_vatic(path: str | Path, frame_base: int | None = None) -> VaticAnnotation:
    """Visible (not lost) boxes of a VATIC file by 0-based frame, and their intervals.

    ``frame_base`` None detects the base; 0 or 1 forces it.
    """
    path = Path(path)
    if frame_base not in (None, 0, 1):
        raise DatasetError(f"frame_base must be None, 0 or 1, got {frame_base!r}")
    rows = parse_vatic(path)
    base = vatic_base(rows) if frame_base is None else frame_base
    boxes: dict[int, list[Box]] = {}
    where: dict[int, list[str]] = {}
    for row in rows:
        if row.frame < base:
            raise malformed(
                path, row.lineno, f"frame numbers >= {base} in a {base}-based file", row.text
            )
        if not row.lost:
            boxes.setdefault(row.frame - base, []).append(row.box)
            where.setdefault(row.frame - base, []).append(f"{path}:{row.lineno}")
    boxes = dict(sorted(boxes.items()))
    return VaticAnnotation(
        boxes=boxes,
        intervals=frames_to_intervals(boxes),
        frame_base=base,
        box_where={f: tuple(w) for f, w in sorted(where.items())},
    )


def write_vatic(path: str | Path, boxes: Sequence[Sequence[float]], start: int, end: int,
                n_frames: int, label: str) -> Path:
    """Write one track's VATIC file (atomically): :func:`vatic_text`."""
    return write_text(Path(path), vatic_text(boxes, start, end, n_frames, label))


def vatic_text(boxes: Sequence[Sequence[float]], start: int, end: int, n_frames: int,
               label: str) -> str:
    """One track's VATIC file, 0-based: a row for every frame ``0..n_frames-1``.

    ``boxes`` holds ``end - start`` boxes ``(x1, y1, x2, y2)``: ``boxes[i]`` is the visible box
    of frame ``start + i``. Frames outside ``[start, end)`` repeat the nearest visible box with
    ``lost = 1``, so the file's smallest frame number is 0 and :func:`read_vatic` detects base 0
    whatever ``start`` is. Rows read ``0 x1 y1 x2 y2 frame lost 0 0 "label"``.
    """
    if not (0 <= start < end <= n_frames and len(boxes) == end - start):
        raise ValueError(f"write_vatic needs 0 <= start < end <= n_frames and end - start "
                         f"boxes, got start={start}, end={end}, n_frames={n_frames} and "
                         f"{len(boxes)} boxes")
    rows = []
    for f in range(n_frames):
        x1, y1, x2, y2 = boxes[min(max(f - start, 0), end - start - 1)]
        rows.append(f'0 {x1} {y1} {x2} {y2} {f} {int(not start <= f < end)} 0 0 "{label}"')
    return "\n".join(rows) + "\n"


def find_split_file(root: Path, split: str) -> Path | None:
    """``root/readme/<file>`` or ``root/<file>`` for ``split`` in train/test."""
    for folder in (root / README_DIR, root):
        if (folder / SPLIT_FILES[split]).is_file():
            return folder / SPLIT_FILES[split]
    return None


def looks_like_crime2local(root: Path) -> bool:
    """Whether a UCF-Crime2Local split file is present."""
    return any(find_split_file(root, split) for split in SPLIT_FILES)


def _name_variants(stem: str) -> list[str]:
    """``Arrest001_x264`` -> ``[Arrest001_x264, Arrest001]``; ``Arrest001`` -> the reverse."""
    base = stem.removesuffix(X264)
    return list(dict.fromkeys([stem, base, base + X264]))


def _category(rel: PurePosixPath, label: int) -> str:
    if label == 0:
        return NORMAL_CATEGORY
    if len(rel.parts) > 1:
        return rel.parts[-2]
    match = re.match(r"[A-Za-z]+", rel.name)
    return match.group(0) if match else ""


class _Loader:
    """Reads one split file against the box folder and the video index."""

    def __init__(self, root: Path, frame_base: int | None) -> None:
        self.root, self.frame_base = root, frame_base
        candidates = [root / README_DIR / BOX_DIR, root / BOX_DIR]
        self.box_dir = next((d for d in candidates if d.is_dir()), candidates[0])
        self.videos = VideoIndex(root / VIDEOS_DIR)
        self.bases: Counter[int] = Counter()

    def _box_file(self, names: list[str]) -> Path | None:
        return next((p for n in names if (p := self.box_dir / f"{n}.txt").is_file()), None)

    def _video(self, names: list[str]) -> Path | None:
        return next((p for n in names if (p := self.videos.find(n)) is not None), None)

    def record(self, split_path: Path, lineno: int, line: str, split: str) -> VideoRecord:
        rel = PurePosixPath(line.replace("\\", "/"))
        names = _name_variants(video_stem(rel.name))
        video, box_file = self._video(names), self._box_file(names)
        ann = read_vatic(box_file, self.frame_base) if box_file else None
        if ann is not None:
            self.bases[ann.frame_base] += 1
            log.debug("%s: %d-based frame numbers", box_file, ann.frame_base)
            if not ann.boxes:
                log.warning("%s: every row is lost; %s is taken as normal", box_file, names[0])
        elif "normal" not in rel.name.lower():
            log.warning(
                "%s:%d: %s has no box file in %s; taken as normal",
                split_path,
                lineno,
                rel.name,
                self.box_dir,
            )
        label = int(ann is not None and bool(ann.boxes))
        return VideoRecord(
            video_id=video.stem if video else names[0],
            label=label,
            path=video,
            split=split,
            category=_category(rel, label),
            intervals=ann.intervals if label else (),
            boxes=ann.boxes if label else {},
            box_where=ann.box_where if label else {},
            interval_where=tuple(ann.box_where[s][0] for s, _ in ann.intervals) if label else (),
        )

    def split(self, split: str) -> list[VideoRecord]:
        path = find_split_file(self.root, split)
        if path is None:
            raise DatasetError(
                f"{self.root}: no {README_DIR}/{SPLIT_FILES[split]} or {SPLIT_FILES[split]}"
            )
        records = []
        for lineno, line in read_lines(path):
            if len(line.split()) != 1:
                raise malformed(
                    path, lineno, "one video name per line, like 'Arrest001_x264'", line
                )
            records.append(self.record(path, lineno, line, split))
        return records


def load_crime2local(
    root: str | Path, split: str = "train", frame_base: int | None = None
) -> list[VideoRecord]:
    """Load UCF-Crime2Local's ``train``, ``test`` or ``all`` (train then test) videos.

    ``frame_base`` None detects each box file's frame base; 0 or 1 forces it for all files.
    """
    root = Path(root)
    check_split(split)
    if frame_base not in (None, 0, 1):
        raise DatasetError(f"frame_base must be None, 0 or 1, got {frame_base!r}")
    loader = _Loader(root, frame_base)
    records: list[VideoRecord] = []
    for name in ("train", "test"):
        if split in (name, "all"):
            records += loader.split(name)
    if loader.bases:
        log.debug(
            "%s: box files read: %d 0-based, %d 1-based", root, loader.bases[0], loader.bases[1]
        )
    return check_records(records, root, split)
