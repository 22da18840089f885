"""Video decoding (PyAV), resizing, normalisation and clip cutting, in bounded memory.

Frames are streamed: at most one clip's worth of resized frames (plus one decode batch) is held
at a time, whatever the video's length. Each whole frame is resized (bilinear, antialiased, no
crop) to ``size`` x ``size`` and scaled to ``[-1, 1]``.

Frames are decoded upright, as a player shows them: a display rotation of 90, 180 or 270
degrees (a phone's portrait video: the container's display matrix) is applied to every frame,
and :class:`VideoInfo` gives the upright size, so that boxes are drawn on what the user sees.
A display matrix that mirrors or turns by another angle is refused.
"""

from __future__ import annotations

import math
import re
import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmil.errors import ConfigError, StmilError
from stmil.features.pipeline_config import (
    TAIL_POLICIES,
    check_count,
    check_fps,
    check_size,
)
from stmil.files import av_path
from stmil.files import one_line as _one_line
from stmil.timeline import resample_indices, source_index

if TYPE_CHECKING:  # torch is imported where frames are resized: decoding alone never needs it
    from torch import Tensor


class VideoError(StmilError, ValueError):
    """A video cannot be used; the message names the file and the reason, on one line."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    width: int
    height: int
    fps: float
    frames_reported: int  # 0 when the container does not say
    duration: float = 0.0  # seconds the video stream claims to last; 0 when unknown
    rotation: int = 0  # degrees (0, 90, 180, 270) the coded frames turn counter-clockwise

    @property
    def coded_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames as stored, before the display rotation."""
        turned = self.rotation % 180 == 90
        return (self.height, self.width) if turned else (self.width, self.height)


def failure_reason(e: BaseException, path: Path) -> str:
    """The reason of a per-video failure, without the video's path (stored apart)."""
    if isinstance(e, VideoError) and e.path == str(path):
        return e.reason
    if isinstance(e, OSError):
        if e.filename and e.strerror:
            return f"{e.filename}: {e.strerror}"
        return e.strerror or str(e)
    return str(e)


def _not_utf8(e: UnicodeDecodeError) -> str:
    """Why a video whose metadata PyAV cannot decode is refused, and the fix."""
    return (f"its metadata (tags, brands) is not UTF-8 ({e.reason} at byte {e.start}), which "
            f"PyAV cannot read; remux it without it: ffmpeg -i IN -map_metadata -1 -c copy OUT")


def probe(path: Path | str) -> VideoInfo:
    """Read the stream header: ``VideoInfo``. Raises :class:`VideoError` if unusable."""
    import av  # here, not at the top: reading features and evaluating need no video decoder

    path = Path(path)
    if not path.exists():
        raise VideoError(path, "no such file")
    if path.is_dir():
        raise VideoError(path, "is a folder, not a video")
    try:
        with av.open(av_path(path)) as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream")
            s = container.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            fps = float(rate) if rate else 0.0
            if s.codec_context is None:  # FFmpeg knows no decoder for its codec id
                raise VideoError(path, "its video codec is unknown to FFmpeg (no decoder for "
                                       "its codec id); re-encode it, e.g. ffmpeg -i IN -c:v "
                                       "libx264 OUT.mp4")
            w, h = s.codec_context.width, s.codec_context.height
            frames = int(s.frames or 0)
            duration = _stream_seconds(s)
            rotation = _display_rotation(container, s, path)
    except av.FFmpegError as e:
        raise VideoError(path, f"not a readable video ({_one_line(e)})") from e
    except UnicodeDecodeError as e:  # PyAV decodes container/stream metadata as UTF-8
        raise VideoError(path, _not_utf8(e)) from e
    if w <= 0 or h <= 0:
        raise VideoError(path, "video stream has no frame size")
    if not fps or not math.isfinite(fps):
        raise VideoError(path, "video stream has no frame rate")
    if rotation % 180 == 90:
        w, h = h, w
    return VideoInfo(w, h, fps, frames, duration, rotation)


def _display_rotation(container, stream, path: Path) -> int:
    """Degrees (0, 90, 180 or 270) the display matrix of the first frame turns the coded
    frames counter-clockwise (FFmpeg's ``av_display_rotation_get``, modulo 360); 0 when there is
    none or the first frame cannot be decoded (:func:`iter_frames` then says why).
    :class:`VideoError` for a mirroring matrix or an angle that is not a multiple of 90."""
    import av

    try:
        frame = next(iter(container.decode(stream)), None)
    except av.FFmpegError:
        return 0
    matrix = None
    for sd in frame.side_data if frame is not None else ():
        if sd.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            matrix = struct.unpack("<9i", bytes(sd)[:36])
    if matrix is None:
        return 0
    fix = "re-encode it upright first (ffmpeg applies the rotation when it re-encodes)"
    if matrix[0] * matrix[4] - matrix[1] * matrix[3] < 0:
        raise VideoError(path, f"its display matrix mirrors the picture, which stmil does not "
                               f"apply; {fix}")
    degrees = float(frame.rotation)
    turn = round(degrees / 90) * 90
    if not math.isfinite(degrees) or abs(degrees - turn) > 0.5:
        raise VideoError(path, f"display rotation of {degrees:g} degrees, not a multiple of "
                               f"90; {fix}")
    return turn % 360


def _stream_seconds(s) -> float:
    """The video stream's duration from the Matroska/WebM ``DURATION`` tag; 0 if absent.

    Only this muxer-written tag is trusted (other formats may estimate a duration from the
    bitrate); containers that report a frame count are checked against that instead.
    """
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", str(s.metadata.get("DURATION", "")))
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else 0.0


def iter_frames(path: Path | str, info: VideoInfo | None = None,
                skip: int = 0) -> Iterator[np.ndarray | None]:
    """Decode every frame as ``(H, W, 3)`` uint8 RGB, upright (``info.rotation`` applied),
    streaming. The first ``skip`` frames are decoded (counted and checked) but yielded as
    ``None``, without their costly conversion to RGB (a later clip range's decode).

    Raises :class:`VideoError` on a decode error, or when a container that reports its frame
    count yields clearly fewer frames (a truncated file), rather than returning part of a video.
    """
    import av

    path = Path(path)
    info = info or probe(path)
    n, end = 0, None
    try:
        with av.open(av_path(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            reformatter = av.video.reformatter.VideoReformatter()
            width, height = info.coded_size
            for frame in container.decode(stream):
                n += 1
                if frame.time is not None:
                    end = frame.time + 1.0 / info.fps
                if n <= skip:
                    yield None
                    continue
                rgb = reformatter.reformat(frame, format="rgb24", width=width, height=height)
                array = rgb.to_ndarray()
                if info.rotation:  # upright, as players show it (counter-clockwise turns)
                    array = np.ascontiguousarray(np.rot90(array, info.rotation // 90))
                yield array
    except av.FFmpegError as e:
        raise VideoError(path, f"corrupt video after {n} frames ({_one_line(e)})") from e
    except UnicodeDecodeError as e:
        raise VideoError(path, _not_utf8(e)) from e
    expected = info.frames_reported
    if expected and n < expected - max(2, expected // 100):
        raise VideoError(path, f"truncated video: decoded {n} of {expected} frames")
    claimed = info.duration
    if not expected and claimed and end is not None and end < claimed - max(
        2.0 / info.fps, claimed / 100
    ):
        raise VideoError(path, f"truncated video: decoded {end:.2f} s of {claimed:.2f} s")
    if n == 0:
        raise VideoError(path, "no frames could be decoded")


def to_model_input(frames: np.ndarray | Tensor, size: int = 224) -> Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, size, size)`` float32 in ``[-1, 1]``.

    The whole frame is resized (bilinear with antialiasing, no crop): the one definition in
    :func:`stmil.features.resize.resize_frames`.
    """
    from stmil.features.resize import resize_frames  # deferred: torch, for resizing only

    return resize_frames(frames, size)


@dataclass
class ClipBatch:
    """A batch of clips: ``clips`` is ``(B, 3, T, S, S)`` float32 model input (a tensor), or,
    from ``iter_clips(..., resize=False)``, ``(B, T, H, W, 3)`` uint8 native-size frames (a
    numpy array: decoding alone never imports torch); ``starts`` are sampled-frame indices."""

    clips: Tensor | np.ndarray
    starts: list[int]
    padded: list[bool]


def _stacker(resize: bool) -> Callable[..., Any]:
    """How clips are stacked: as torch tensors (resized model input) or as numpy arrays
    (native uint8 frames, for which decoding never imports torch)."""
    if not resize:
        return np.stack
    import torch  # deferred: decoding alone (resize=False) never needs torch

    return torch.stack


def iter_clips(
    path: Path | str,
    clip_len: int = 16,
    stride: int = 16,
    size: int = 224,
    fps: float | None = None,
    tail: str = "drop",
    batch_size: int = 8,
    info: VideoInfo | None = None,
    stats: dict | None = None,
    resize: bool = True,
    clips: tuple[int, int | None] = (0, None),
) -> Iterator[ClipBatch]:
    """Stream clips of ``clip_len`` frames, one every ``stride`` (sampled) frames.

    ``fps`` resamples (``None``: native rate). ``tail="drop"`` drops the trailing partial
    clip; ``"pad"`` keeps it, repeating its last frame. ``stats`` (if given) receives
    ``n_frames`` (source frames decoded) and ``n_sampled`` at the end. ``resize=False`` yields
    uint8 clips ``(B, T, H, W, 3)`` at the native size as numpy arrays (no torch needed), for
    resizing on the model's device with :func:`stmil.features.resize.resize_clips`.

    ``clips=(first, end)`` yields only clips ``first <= k < end`` (``end=None``: to the last,
    tail included): the frames before them are decoded but not converted, decoding stops after
    them (``stats`` is then left unset), and with ``first`` a multiple of ``batch_size`` the
    batches are those of the whole video's, cut at the range.
    """
    if tail not in TAIL_POLICIES:
        raise ConfigError(f"tail must be one of {TAIL_POLICIES}, got {tail!r}")
    for name, value in (("clip_len", clip_len), ("stride", stride), ("batch_size", batch_size)):
        check_count(name, value)
    check_size(size)
    fps = check_fps(fps)
    info = info or probe(path)
    first, end = clips[0] * stride, None if clips[1] is None else clips[1] * stride
    window: deque = deque(maxlen=clip_len)
    pending: list[tuple[Tensor | np.ndarray, int, bool]] = []
    wanted = resample_indices(info.fps, fps)
    next_src, n_src, n_sampled = next(wanted), 0, 0
    last_start = -stride
    t_dim = 1 if resize else 0  # (3, T, S, S) model input, or (T, H, W, 3) uint8
    stack = _stacker(resize)

    def flush() -> Iterator[ClipBatch]:
        if pending:
            yield ClipBatch(stack([c for c, _, _ in pending]),
                            [s for _, s, _ in pending], [p for _, _, p in pending])
            pending.clear()

    skip = source_index(first, info.fps, fps)
    for n_src, frame in enumerate(iter_frames(path, info, skip), start=1):
        src = n_src - 1
        if src < next_src:
            continue
        if frame is None:
            resized = None
        else:
            resized = to_model_input(frame[None], size)[0] if resize else frame
        while next_src == src:  # upsampling repeats a source frame
            window.append(resized)
            n_sampled += 1
            start = n_sampled - clip_len
            if start >= 0 and start % stride == 0:
                last_start = start
                if start >= first and (end is None or start < end):
                    pending.append((stack(list(window), t_dim), start, False))
                    if len(pending) == batch_size:
                        yield from flush()
            next_src = next(wanted)
        if end is not None and n_sampled >= end - stride + clip_len:
            yield from flush()  # the range's last clip is cut: later frames are not its
            return
    if tail == "pad":
        start = last_start + stride
        if first <= start < n_sampled and (end is None or start < end):
            have = list(window)[start - (n_sampled - len(window)):]
            have += [have[-1]] * (clip_len - len(have))
            pending.append((stack(have, t_dim), start, True))
    yield from flush()
    if stats is not None:
        stats.update(n_frames=n_src, n_sampled=n_sampled)
