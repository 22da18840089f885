"""The one record type every dataset loader yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the original frame


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset, independent of the dataset's file format.

    - ``video_id``: the video file's stem (``Arrest001_x264``); feature files are named by it.
    - ``label``: 1 for a video containing an anomaly, 0 for a normal video.
    - ``intervals``: anomalous frame spans, 0-based, half-open ``(start, end)``, at the
      video's native frame rate. Empty for normal videos and where not annotated.
    - ``boxes``: 0-based frame index -> boxes visible in that frame. Empty when not annotated.
    - ``n_frames``: the frame count when the annotation states it, else ``None``.
    - ``box_where``: for each frame of ``boxes``, where each of its boxes was read
      (``"file:line"`` or a JSON entry), aligned with ``boxes[frame]``; ``interval_where``:
      the same for ``intervals``. Used in error messages only; not compared.
    """

    video_id: str
    label: int
    path: Path | None = None
    split: str = ""
    category: str = ""
    intervals: tuple[tuple[int, int], ...] = ()
    boxes: dict[int, list[Box]] = field(default_factory=dict)
    n_frames: int | None = None
    box_where: dict[int, tuple[str, ...]] = field(default_factory=dict, compare=False,
                                                  repr=False)
    interval_where: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def has_boxes(self) -> bool:
        return bool(self.boxes)
