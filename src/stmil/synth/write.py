"""Writers for the semi-synthetic benchmark: H.264 videos and UCF-Crime2Local annotation files.

Every file is written to a temporary name beside its destination and put into place whole
(:mod:`stmil.synth.dataset` commits each with its folder's ledger), so a reader never sees half
a file. Video encoding is single-threaded so that the same frames give
the same bytes on every run (given the same FFmpeg and x264 builds).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Protocol

import av
import numpy as np

from stmil.atomic import naming, temp_path
from stmil.datasets.crime2local import vatic_text
from stmil.datasets.layout import SPLIT_FILES, TEMPORAL, box_file, split_file
from stmil.files import MP4_OPTIONS

# One thread, and no macroblock tree: with mbtree on, libx264 (via FFmpeg) was seen to give
# different bytes for the same frames depending on the process's earlier allocations.
X264_OPTIONS = {"crf": "20", "preset": "fast", "threads": "1", "mbtree": "0"}


class PlanLike(Protocol):
    video_id: str
    split: str
    kind: str
    start: int
    end: int

    @property
    def category(self) -> str: ...


class VideoWriter:
    """Encode ``(H, W, 3)`` uint8 RGB frames to an H.264 mp4, atomically. Use as a context.

    Frames go to a temporary file beside it (:func:`stmil.atomic.temp_path`, so a rerun's
    :func:`stmil.atomic.remove_stale_temps` removes what a kill left), put into place only
    when the file is whole, by ``place(tmp, path)`` (default: a rename; ``synth`` commits it
    with its folder's ledger); on any failure (a full disk included, in encoding, flushing,
    closing or renaming) the temporary file is removed and the destination is untouched.
    """

    def __init__(self, path: Path, width: int, height: int, fps: Fraction,
                 place: Callable[[Path, Path], None] = os.replace):
        self.path, self.place = path, place
        with naming(path):  # a full disk names the video, not its temporary file
            self.tmp = temp_path(path)
            try:
                self.container = av.open(str(self.tmp), "w", format="mp4",
                                         options=MP4_OPTIONS)
                try:
                    self.stream = self.container.add_stream("libx264", rate=fps,
                                                            options=X264_OPTIONS)
                    self.stream.width, self.stream.height = width, height
                    self.stream.pix_fmt = "yuv420p"
                except BaseException:
                    self.container.close()
                    raise
            except BaseException:
                self.tmp.unlink(missing_ok=True)
                raise

    def write(self, frame: np.ndarray) -> None:
        """Encode one frame."""
        with naming(self.path):
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self.container.mux(packet)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            with naming(self.path):
                try:
                    if kind is None:
                        for packet in self.stream.encode():
                            self.container.mux(packet)
                finally:
                    self.container.close()
                if kind is None:
                    self.place(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        if kind is not None:
            self.tmp.unlink(missing_ok=True)


def annotation_files(root: Path, plans: Sequence[PlanLike], records: Mapping[str, dict],
                     n_frames: int) -> list[tuple[Path, str]]:
    """``(path, text)`` of the split lists, the VATIC box files and the UCF-Crime temporal
    annotation of the test split (written as one unit by the caller)."""
    files = []
    for split in SPLIT_FILES:
        ids = sorted(p.video_id for p in plans if p.split == split)
        files.append((root / split_file(split), "\n".join(ids) + "\n"))
    temporal = []
    for p in sorted(plans, key=lambda p: p.video_id):
        if p.kind:
            files.append((root / box_file(p.video_id),
                          vatic_text(records[p.video_id]["boxes"], p.start, p.end, n_frames,
                                     p.kind)))
        if p.split == "test":
            span = f"{p.start + 1}  {p.end}" if p.kind else "-1  -1"
            temporal.append(f"{p.video_id}.mp4  {p.category}  {span}  -1  -1")
    files.append((root / TEMPORAL, "\n".join(temporal) + "\n"))
    return files
