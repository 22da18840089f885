"""UCF-Crime bounding boxes of Liu and Ma (ACM MM 2019), spatial ground truth for UCF-Crime.

One pickle per split (``Test_annotation.pkl`` / ``test_ann.pkl``: 140 test videos, 3,102
boxes; ``train_ann.pkl``: 810 videos): a dict from video id (``Shoplifting010_x264``) to a list
of ``[image_path, x1, y1, x2, y2]``. Conventions, as read here:

- the frame is the number in the path's ``image_NNNN.jpg``, **1-based** (ffmpeg's numbering:
  ``image_0001.jpg`` is the first frame), so it becomes 0-based frame ``NNNN - 1``;
- the box is in pixels of a **320x240** frame (the size the images were extracted at), and is
  scaled to the video's real size (``x * width / 320``, ``y * height / 240``);
- about one frame in 16 carries a box; the frames between take **no box** (they are not
  interpolated), unless ``interpolate``: then a frame between two annotated frames at most
  ``max_gap`` apart, each with one box, takes the linear interpolation of the two boxes.

The file holds only builtins (dicts, lists, strings, numbers). It is read with an unpickler that
admits no globals at all: a pickle naming any class or function is refused before anything of
it is built.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

from stmil.datasets.errors import DatasetError
from stmil.datasets.record import Box, VideoRecord

#: The frame size Liu and Ma's boxes are given in.
ANNOTATED_SIZE = (320, 240)
FRAME_RE = re.compile(r"image_(\d+)\.jpg$")
MAX_GAP = 32
log = logging.getLogger(__name__)


class _NoGlobals(pickle.Unpickler):
    """An unpickler that refuses every global (class, function) and persistent id."""

    def find_class(self, module: str, name: str):  # noqa: D102 - refuses everything
        raise pickle.UnpicklingError(f"it names {module}.{name}; only builtins are allowed")

    def persistent_load(self, pid):  # noqa: D102
        raise pickle.UnpicklingError("it holds a persistent id; only builtins are allowed")


def load_builtins_pickle(path: Path) -> object:
    """The object in ``path``, built from builtins only (no globals admitted)."""
    try:
        return _NoGlobals(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            KeyError, AttributeError) as e:
        raise DatasetError(f"{path}: not a Liu & Ma annotation pickle ({e})") from e


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_liu_ma(path: Path | str) -> dict[str, list[tuple[int, Box]]]:
    """Video id -> ``[(0-based frame, box in 320x240 pixels), ...]`` sorted by frame.

    Raises :class:`DatasetError` naming the file and the video and entry of a malformed item.
    """
    path = Path(path)
    data = load_builtins_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict from video id to boxes, got "
                           f"{type(data).__name__}")
    out: dict[str, list[tuple[int, Box]]] = {}
    for vid, entries in data.items():
        where = f"{path}[{vid!r}]"
        if not isinstance(vid, str) or not isinstance(entries, list):
            raise DatasetError(f"{where}: expected a video id mapped to a list of entries")
        rows = []
        for i, e in enumerate(entries):
            rows.append(_entry(e, f"{where}[{i}]"))
        out[vid] = sorted(rows)
    return out


def _entry(e: object, where: str) -> tuple[int, Box]:
    """``(0-based frame, box)`` of one ``[image_path, x1, y1, x2, y2]`` entry, or a
    :class:`DatasetError` at ``where`` naming the part that is wrong."""
    if not (isinstance(e, (list, tuple)) and len(e) == 5):
        raise DatasetError(f"{where}: expected [.../image_NNNN.jpg, x1, y1, x2, y2], got {e!r}")
    m = FRAME_RE.search(e[0]) if isinstance(e[0], str) else None
    if not m or int(m[1]) < 1:
        raise DatasetError(f"{where}: expected [.../image_NNNN.jpg, x1, y1, x2, y2] with "
                           f"NNNN >= 1 (1-based), got the image path {e[0]!r}")
    bad = [name for name, v in zip(("x1", "y1", "x2", "y2"), e[1:]) if not _number(v)]
    if bad:
        raise DatasetError(f"{where}: {', '.join(bad)} must be finite numbers (pixels), got "
                           f"{e!r}")
    x1, y1, x2, y2 = (float(v) for v in e[1:])
    if x2 <= x1 or y2 <= y1:
        raise DatasetError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty or "
                           "inverted")
    return int(m[1]) - 1, (x1, y1, x2, y2)


def scale_box(box: Box, width: int, height: int) -> Box:
    """A 320x240 box in a ``width`` x ``height`` frame."""
    sx, sy = width / ANNOTATED_SIZE[0], height / ANNOTATED_SIZE[1]
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def frame_boxes(rows: Sequence[tuple[int, Box]], width: int, height: int,
                interpolate: bool = False, max_gap: int = MAX_GAP) -> dict[int, list[Box]]:
    """0-based frame -> boxes scaled to ``width`` x ``height``; optionally interpolated."""
    boxes: dict[int, list[Box]] = {}
    for f, b in rows:
        boxes.setdefault(f, []).append(scale_box(b, width, height))
    if interpolate:
        keys = sorted(boxes)
        for a, b in zip(keys, keys[1:]):
            if b - a > max_gap or len(boxes[a]) != 1 or len(boxes[b]) != 1:
                continue
            ba, bb = boxes[a][0], boxes[b][0]
            for f in range(a + 1, b):
                t = (f - a) / (b - a)
                boxes[f] = [tuple(p + t * (q - p) for p, q in zip(ba, bb))]  # type: ignore
    return dict(sorted(boxes.items()))


def attach_liu_ma(record: VideoRecord, rows: Sequence[tuple[int, Box]] | None, width: int,
                  height: int, n_frames: int, where: str, interpolate: bool = False
                  ) -> VideoRecord:
    """``record`` with Liu and Ma's boxes (scaled to ``width`` x ``height``) as its boxes;
    unchanged when ``rows`` is None (the video is not annotated).

    Boxes on frames at or after ``n_frames`` (the frames the features describe: imported
    16 x T snippets stop before the video's end) are left out with a warning.
    """
    if rows is None:
        return record
    boxes = frame_boxes(rows, width, height, interpolate)
    late = [f for f in boxes if f >= n_frames]
    if late:
        log.warning("%s[%r]: %d annotated frames from frame %d (1-based) on lie after the %d "
                    "frames the features describe; left out", where, record.video_id,
                    len(late), late[0] + 1, n_frames)
        boxes = {f: b for f, b in boxes.items() if f < n_frames}
    box_where = {f: (f"{where}[{record.video_id!r}] frame {f + 1} (1-based)",) * len(b)
                 for f, b in boxes.items()}
    return dataclasses.replace(record, boxes=boxes, box_where=box_where)
