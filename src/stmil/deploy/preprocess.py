"""The manifest's preprocessing in numpy alone, for runtimes without PyTorch (``stmil watch``
on an exported model).

:func:`resize_frames` computes :func:`stmil.features.resize.resize_frames` (the one resize
definition, ``bilinear-antialias``: PyTorch's ``interpolate(..., mode="bilinear",
antialias=True, align_corners=False)`` on float32 values 0..255, then ``(x - 127.5) / 127.5``
clamped to ``[-1, 1]``) with the same separable filter: a triangle kernel widened by the
downscale factor, each output pixel a normalised weighted sum of its input taps, width first,
then height. It differs from PyTorch by float32 rounding alone (measured on vtest.avi:
tests/deploy/test_preprocess.py, docs/deploy.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stmil.deploy.manifest import SCALE


@lru_cache(maxsize=16)
def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices ``(n_out, K)`` and float32 weights ``(n_out, K)`` (rows sum to 1; unused
    taps weigh 0) of antialiased bilinear resampling from ``n_in`` to ``n_out`` samples, as
    PyTorch computes them (``align_corners=False``)."""
    f = np.float32  # PyTorch computes the weights of float input in float32
    scale = f(n_in / n_out)
    support = scale if scale >= 1.0 else f(1.0)  # bilinear: 1 tap each side, times downscale
    inv = f(1.0) / scale if scale >= 1.0 else f(1.0)
    centers = scale * (np.arange(n_out, dtype=f) + f(0.5))
    lo = np.maximum((centers - support + f(0.5)).astype(np.int64), 0)
    hi = np.minimum((centers + support + f(0.5)).astype(np.int64), n_in)
    k = int((hi - lo).max())
    idx = lo[:, None] + np.arange(k)[None, :]
    w = np.clip(f(1.0) - np.abs((idx.astype(f) - centers[:, None] + f(0.5)) * inv), f(0), None)
    w[idx >= hi[:, None]] = 0.0
    total = np.zeros(n_out, f)
    for j in range(k):  # summed tap by tap, in order, as PyTorch does
        total += w[:, j]
    w /= total[:, None]
    return np.minimum(idx, n_in - 1), w.astype(np.float32)


def resize_frames(frames: np.ndarray, size: int = 224) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, size, size)`` float32 in ``[-1, 1]``: the whole
    frame, no crop (the manifest's ``preprocess``)."""
    x = np.asarray(frames).astype(np.float32)
    n, h, w, _ = x.shape
    if (h, w) != (size, size):
        x = _pass(x, *taps(w, size), axis=2)  # (N, H, S, 3)
        x = _pass(x, *taps(h, size), axis=1)  # (N, S, S, 3)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    x *= np.float32(SCALE)  # as PyTorch: times 2/255, minus 1 (MEAN * SCALE)
    x -= np.float32(1.0)
    return np.clip(x, -1.0, 1.0, out=x)


def _pass(x: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """Resample ``x`` ``(N, H, W, 3)`` along ``axis`` (1: height, 2: width) with
    :func:`taps`, accumulating tap by tap in float32 as PyTorch does."""
    shape = [1, 1, 1, 1]
    shape[axis] = len(w)
    out = np.take(x, idx[:, 0], axis=axis) * w[:, 0].reshape(shape)
    for j in range(1, w.shape[1]):
        out += np.take(x, idx[:, j], axis=axis) * w[:, j].reshape(shape)
    return out
