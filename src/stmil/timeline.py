"""Frames <-> clips <-> segments: the one time geometry.

Frames are 0-based source frames; clip, segment and interval ranges are half-open
``[start, end)``. A video's clips cover source frames (:func:`clip_frame_ranges`); its clips are
grouped into MIL segments (:func:`segment_clip_ranges`); clip scores go back to frames
(:func:`frame_scores_from_clips`, :func:`frame_to_clip`) and annotated intervals become frame
labels (:func:`frame_labels`). numpy only: no torch, no files.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike


def clip_frame_ranges(
    n_clips: int, clip_len: int, stride: int, src_fps: float, fps: float | None, n_frames: int
) -> np.ndarray:
    """Source-frame range of each clip: ``(n_clips, 2)`` int, half-open ``[start, end)``.

    Padded tail clips end at ``n_frames``.
    """
    ratio = 1.0 if fps is None else src_fps / fps
    starts = np.arange(n_clips) * stride
    first = np.floor(starts * ratio + 1e-9).astype(np.int64)
    last = np.floor((starts + clip_len - 1) * ratio + 1e-9).astype(np.int64)
    return np.stack([first, np.minimum(last + 1, n_frames)], axis=1)


def frame_to_clip(clip_ranges: np.ndarray, n_frames: int) -> np.ndarray:
    """Clip index of each frame ``(n_frames,)``: the last clip starting at or before it."""
    return np.clip(np.searchsorted(clip_ranges[:, 0], np.arange(n_frames), side="right") - 1,
                   0, len(clip_ranges) - 1)


def frame_scores_from_clips(
    clip_scores: np.ndarray, clip_ranges: np.ndarray, n_frames: int
) -> np.ndarray:
    """Per-frame scores ``(n_frames,)`` from clip scores ``(n_clips,)`` and ranges ``(n_clips, 2)``.

    A frame covered by clips gets the maximum of their scores. A frame covered by none (the clip
    tail) takes the score of the nearest covered frame before it, i.e. the last clip's score
    when clips do not overlap; frames before the first clip take the first covered frame's score.
    """
    s = np.asarray(clip_scores, dtype=np.float64).ravel()
    r = np.asarray(clip_ranges, dtype=np.int64).reshape(-1, 2)
    if s.size == 0 or s.size != len(r):
        raise ValueError(f"need n_clips >= 1 scores and ranges, got {s.size} and {len(r)}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    if np.any(r[:, 0] < 0) or np.any(r[:, 1] <= r[:, 0]) or np.any(r[:, 1] > n_frames):
        raise ValueError(f"clip ranges must satisfy 0 <= start < end <= n_frames ({n_frames})")
    out = np.full(n_frames, -np.inf)
    for (start, end), v in zip(r, s, strict=True):
        np.maximum(out[start:end], v, out=out[start:end])
    covered = np.isfinite(out)
    prev = np.maximum.accumulate(np.where(covered, np.arange(n_frames), -1))
    prev[prev < 0] = np.flatnonzero(covered)[0]
    return out[prev]


def frame_labels(intervals: ArrayLike, n_frames: int) -> np.ndarray:
    """``(n_frames,)`` bool: True inside any 0-based half-open ``[start, end)`` interval.

    ``intervals``: ``(K, 2)`` or a list of pairs; ranges are clipped to ``[0, n_frames)``.
    """
    y = np.zeros(int(n_frames), dtype=bool)
    for start, end in np.asarray(intervals, dtype=np.int64).reshape(-1, 2):
        if end < start:
            raise ValueError(f"interval end before start: [{start}, {end})")
        y[max(int(start), 0) : max(min(int(end), n_frames), 0)] = True
    return y


def segment_bounds(n_clips: int, n_segments: int = 32) -> np.ndarray:
    """Segment boundaries in clip indices: ``(n_segments + 1,)`` int64.

    ``round(linspace(0, n_clips, n_segments + 1))`` with numpy's rounding (half to even, so
    2.5 -> 2 and 7.5 -> 8). Segment ``s`` covers clips ``[bounds[s], bounds[s + 1])``, which is
    empty when ``n_clips < n_segments`` for some ``s`` (see :func:`segment_clip_ranges`).
    """
    if n_clips < 1:
        raise ValueError(f"a bag needs at least one clip, got n_clips={n_clips}")
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    return np.round(np.linspace(0, n_clips, n_segments + 1)).astype(np.int64)


def segment_clip_ranges(n_clips: int, n_segments: int = 32) -> np.ndarray:
    """Half-open clip range ``[start, end)`` of each segment: ``(n_segments, 2)`` int64.

    Every range is non-empty. A segment whose bounds coincide (``start == end``, which happens
    when the video has fewer clips than segments) takes the single clip
    ``min(start, n_clips - 1)``, so short videos repeat clips rather than leave holes.
    """
    bounds = segment_bounds(n_clips, n_segments)
    starts, ends = bounds[:-1].copy(), bounds[1:].copy()
    empty = starts == ends
    starts[empty] = np.minimum(starts[empty], n_clips - 1)
    ends[empty] = starts[empty] + 1
    return np.stack([starts, ends], axis=1)


def source_index(k: int, src_fps: float, fps: float | None) -> int:
    """Source frame index of sampled frame ``k``: ``floor(k * src_fps / fps)`` (``k`` at the
    native rate)."""
    return k if fps is None else int(math.floor(k * src_fps / fps + 1e-9))


def resample_indices(src_fps: float, fps: float | None) -> Iterator[int]:
    """Source frame index of each sampled frame (:func:`source_index`), k = 0, 1, ..."""
    k = 0
    while True:
        yield source_index(k, src_fps, fps)
        k += 1
