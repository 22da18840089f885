"""Annotations against the video they describe: boxes inside the frame, frames inside the video.

Two stages, because the loaders do not know a video's size or length:

- :func:`box_problem` (at parse time): a box with a NaN or infinite corner, or with
  ``x2 <= x1`` or ``y2 <= y1`` (inverted or empty), is refused by the loader, naming file and
  line.
- :func:`fit_to_video` (once the video's width, height and frame count are known from its
  features): a box that sticks out of the frame by at most :data:`FRAME_SLACK` of the frame's
  size is clipped to the frame, with one warning per video naming the first such line; a box
  further out, or with nothing inside the frame, is refused. A box or an interval that starts
  at or after the video's last frame is refused (wrong video, frame rate or frame base); an
  interval that starts inside the video and ends after it is cut at the end, with a warning.

Every refusal is a :class:`DatasetError` that names the file and line (or JSON entry) of the
annotation, from the record's ``box_where`` and ``interval_where``.
"""

from __future__ import annotations

import dataclasses
import logging
import math

from stmil.datasets.errors import DatasetError
from stmil.datasets.record import Box, VideoRecord

log = logging.getLogger(__name__)

#: How far (as a fraction of the frame's width or height) a box may stick out of the frame and
#: still be clipped to it; further out, the box is refused.
FRAME_SLACK = 0.1


def box_problem(box: Box) -> str | None:
    """What is wrong with a box on its own (non-finite, inverted or empty), or ``None``."""
    if not all(math.isfinite(v) for v in box):
        return "finite box corners (no NaN or infinity)"
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return "a box with xmin < xmax and ymin < ymax (not inverted or empty)"
    return None


def _where(record: VideoRecord, frame: int, k: int) -> str:
    places = record.box_where.get(frame, ())
    return places[k] if k < len(places) else f"video {record.video_id!r}, frame {frame}"


def _fit_box(box: Box, width: int, height: int) -> Box | None:
    """``box`` clipped to the frame, or ``None`` when it lies too far outside to be clipped."""
    x1, y1, x2, y2 = box
    sx, sy = FRAME_SLACK * width, FRAME_SLACK * height
    if x1 < -sx or y1 < -sy or x2 > width + sx or y2 > height + sy:
        return None
    fitted = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if fitted[2] <= fitted[0] or fitted[3] <= fitted[1]:
        return None
    return fitted


def fit_to_video(record: VideoRecord, width: int, height: int, n_frames: int) -> VideoRecord:
    """``record`` with its boxes and intervals checked against a ``width`` x ``height`` video
    of ``n_frames`` frames: clipped (with a warning) where slightly out, refused where not.

    Raises :class:`DatasetError` naming the annotation's file and line.
    """
    video = f"{record.video_id} ({width}x{height}, {n_frames} frames)"
    boxes: dict[int, list[Box]] = {}
    clipped: list[str] = []
    for frame, frame_boxes in record.boxes.items():
        if frame >= n_frames:
            raise DatasetError(
                f"{_where(record, frame, 0)}: box on frame {frame}, but video {video} ends at "
                f"frame {n_frames - 1}; wrong video, frame rate or frame base?")
        for k, box in enumerate(frame_boxes):
            fitted = _fit_box(box, width, height)
            if fitted is None:
                raise DatasetError(
                    f"{_where(record, frame, k)}: box {tuple(box)} on frame {frame} lies outside "
                    f"the {width}x{height} frame of {record.video_id} (more than "
                    f"{FRAME_SLACK:.0%} of the frame beyond its edge); fix or remove it")
            if fitted != tuple(box):
                clipped.append(_where(record, frame, k))
            boxes.setdefault(frame, []).append(fitted)
    intervals: list[tuple[int, int]] = []
    cut: list[str] = []
    for i, (start, end) in enumerate(record.intervals):
        where = (record.interval_where[i] if i < len(record.interval_where)
                 else f"video {record.video_id!r}")
        if start >= n_frames:
            raise DatasetError(
                f"{where}: anomalous frames [{start}, {end}) start after the end of video "
                f"{video}; wrong video or frame rate?")
        if end > n_frames:
            cut.append(f"{where} ([{start}, {end}))")
        intervals.append((start, min(end, n_frames)))
    if clipped:
        log.warning("%s: %d boxes stick out of the %dx%d frame of %s and were clipped to it",
                    clipped[0], len(clipped), width, height, record.video_id)
    if cut:
        log.warning("%s: anomalous frames end after the last frame (%d) of %s and were cut there"
                    "%s", cut[0], n_frames - 1, record.video_id,
                    f" ({len(cut)} intervals)" if len(cut) > 1 else "")
    if not clipped and not cut:
        return record
    return dataclasses.replace(record, boxes=boxes, intervals=tuple(intervals))
