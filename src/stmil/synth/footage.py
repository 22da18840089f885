"""Real footage for the semi-synthetic benchmark: decode a source once, cut cropped windows.

A source video is decoded with PyAV and held in memory, downscaled just enough that the
tightest crop (70% of the source side) still has the output's resolution. Each output video is
a window of ``n_frames`` consecutive source frames with a random crop of the output's aspect
ratio (70-100% of the largest such crop), an optional horizontal flip, resized to the output size.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stmil.errors import StmilError
from stmil.files import av_path

MIN_CROP = 0.7
MAX_FOOTAGE_BYTES = 1536 * 2**20  # the decoded, downscaled frames of one source


class FootageError(StmilError, ValueError):
    """Footage that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")


@dataclass
class Footage:
    """A decoded source: ``frames`` (each ``(h, w, 3)`` uint8), frame rate and original size."""

    path: Path
    frames: list[np.ndarray]
    fps: Fraction
    size: tuple[int, int]  # original (width, height)

    @property
    def scale(self) -> float:
        """Source pixels per held pixel."""
        return self.size[0] / self.frames[0].shape[1]


def _max_crop(src_w: int, src_h: int, width: int, height: int) -> tuple[float, float]:
    """The largest crop ``(w, h)`` of the output's aspect ratio inside a ``src_w x src_h`` frame."""
    if src_w * height > src_h * width:
        return src_h * width / height, float(src_h)
    return float(src_w), src_w * height / width


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FootageError(path, "no such file")
    try:
        container = av.open(av_path(path))
    except av.FFmpegError as e:
        raise FootageError(path, f"not a readable video ({' '.join(str(e).split())})") from e
    if not container.streams.video:
        container.close()
        raise FootageError(path, "no video stream")
    return container


def _check_header(path: Path, stream: av.video.stream.VideoStream, width: int, height: int,
                  n_frames: int) -> Fraction:
    """Refuse a source too small, without a frame rate, or reported too short; its frame rate."""
    src_w, src_h = stream.codec_context.width, stream.codec_context.height
    if 2 * src_w < width or 2 * src_h < height:
        raise FootageError(path, f"too small: frames are {src_w}x{src_h}, less than half the "
                                 f"output size {width}x{height}")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise FootageError(path, "no frame rate")
    if stream.frames and stream.frames < n_frames:
        raise FootageError(path, f"too short: {stream.frames} frames, fewer than "
                                 f"n_frames={n_frames}")
    return Fraction(rate)


def probe_footage(path: Path, width: int, height: int, n_frames: int) -> None:
    """Check the header of a source, before anything is written; see :func:`load_footage`."""
    with _open(path) as container:
        _check_header(path, container.streams.video[0], width, height, n_frames)


def load_footage(path: Path, width: int, height: int, n_frames: int,
                 max_bytes: int = MAX_FOOTAGE_BYTES) -> Footage:
    """Decode ``path`` for output videos of ``width x height`` and ``n_frames`` frames.

    Raises :class:`FootageError` for a missing or unreadable file, a source smaller than half the
    output size, one with fewer than ``n_frames`` frames, or one too big to hold in memory.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = _check_header(path, stream, width, height, n_frames)
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
        crop_w, _ = _max_crop(src_w, src_h, width, height)
        scale = min(1.0, width / (MIN_CROP * crop_w))
        w, h = max(2, round(src_w * scale)), max(2, round(src_h * scale))
        try:
            frames = _decode(container, stream, path, w, h, max_bytes)
        except av.FFmpegError as e:
            raise FootageError(path, f"decoding failed after some frames "
                                     f"({' '.join(str(e).split())})") from e
    if len(frames) < n_frames:
        raise FootageError(path, f"too short: {len(frames)} frames, fewer than n_frames={n_frames}")
    return Footage(path, frames, rate, (src_w, src_h))


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
            path: Path, w: int, h: int, max_bytes: int) -> list[np.ndarray]:
    """Every frame as ``(h, w, 3)`` uint8, refusing to hold more than ``max_bytes``."""
    frames: list[np.ndarray] = []
    limit = max_bytes // (w * h * 3)
    for frame in container.decode(stream):
        if len(frames) >= limit:
            raise FootageError(path, f"too long to hold in memory: more than {limit} frames "
                                     f"at {w}x{h} (limit {max_bytes // 2**20} MiB)")
        rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
        frames.append(rgb.to_ndarray())
    return frames


class FootageClip:
    """A window of a source with a random crop, flip and time offset; ``next_frame()`` per frame."""

    def __init__(self, rng: np.random.Generator, footage: Footage, width: int, height: int,
                 n_frames: int):
        n, (src_h, src_w) = len(footage.frames), footage.frames[0].shape[:2]
        cw, ch = _max_crop(src_w, src_h, width, height)
        f = rng.uniform(MIN_CROP, 1.0)
        cw, ch = min(src_w, max(2, round(cw * f))), min(src_h, max(2, round(ch * f)))
        self.crop = (int(rng.integers(0, src_w - cw + 1)), int(rng.integers(0, src_h - ch + 1)),
                     cw, ch)
        self.flip = bool(rng.random() < 0.5)
        self.offset = int(rng.integers(0, n - n_frames + 1))
        self.footage, self.width, self.height, self.t = footage, width, height, 0

    def next_frame(self) -> np.ndarray:
        """The next ``(height, width, 3)`` uint8 frame of the window (writable)."""
        x, y, w, h = self.crop
        src = self.footage.frames[self.offset + self.t][y:y + h, x:x + w]
        if self.flip:
            src = src[:, ::-1]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(src), format="rgb24")
        out = frame.reformat(width=self.width, height=self.height, format="rgb24",
                             interpolation="BILINEAR").to_ndarray()
        self.t += 1
        return out

    def finish(self, frame: np.ndarray) -> np.ndarray:
        """Real footage already has its own noise and lighting: the frame as it is."""
        return frame

    def describe(self) -> dict:
        """Where this window comes from, for ``synth.json``."""
        crop = [round(v * self.footage.scale) for v in self.crop]
        return {"source": str(self.footage.path), "offset": self.offset, "crop": crop,
                "flip": self.flip}

