"""Clip features -> 32 temporal segments -> MIL bags, and per-segment cuboid labels from boxes.

A video's features are ``(n_clips, N, C)`` with ``N = G*G`` cuboids per clip. Its clips are
split into segments at ``round(linspace(0, n_clips, n_segments + 1))``; each segment is the mean
of its clips' features, cuboid by cuboid, L2-normalised per instance. A bag is therefore
``(n_segments, N, C)``: ``n_segments * N`` instances.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stmil.cuboids import cuboid_labels
from stmil.timeline import segment_clip_ranges

L2_EPS = 1e-12


def make_bag(features: np.ndarray, n_segments: int = 32, grid1: bool = False) -> np.ndarray:
    """One video's features ``(n_clips, N, C)`` -> bag ``(n_segments, N, C)`` float32.

    Each segment is the mean of its clips' features, cuboid by cuboid, then L2-normalised per
    instance (``x / max(||x||, 1e-12)``). With ``grid1=True`` (the video-segment baseline,
    Sultani's setting) each clip's N cuboids are first averaged into one whole-frame instance,
    giving ``(n_segments, 1, C)``.

    ``features`` may be a read-only float16 ``np.memmap``: only one segment's clips are read and
    converted to float32 at a time.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (n_clips, N, C), got shape {features.shape}")
    n_clips, n_cub, dim = features.shape
    ranges = segment_clip_ranges(n_clips, n_segments)
    bag = np.empty((n_segments, 1 if grid1 else n_cub, dim), dtype=np.float32)
    for s, (start, end) in enumerate(ranges):
        # Equal cuboids per clip, so the mean of clip means is the mean over clips and cuboids.
        axes = (0, 1) if grid1 else 0
        bag[s] = np.mean(features[start:end], axis=axes, dtype=np.float32)
    return l2_normalise(bag)


def l2_normalise(x: np.ndarray, eps: float = L2_EPS) -> np.ndarray:
    """``(..., C)`` -> same shape, each vector divided by ``max(||x||_2, eps)``."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32, copy=False)


# Bags held in RAM on a CPU up to this size. UCF-Crime's 1,610 bags take 2.48 GiB: held, the
# process peaked at 4.7 GB RSS (bags + the step's working set, benchmarks/NOTES.md), so on a
# CPU they stay memory-mapped (file pages the kernel can reclaim) and RSS stays under 4 GB.
CPU_RESIDENT_BYTES = 1 << 30


class BagStore:
    """Every training bag, gathered into float32 batches on the training device.

    ``bags`` is ``(n_bags, S, N, C)`` float16 (the memory-mapped bag cache). When it fits the
    budget (``max_bytes``; default: 1 GiB on a CPU, half the free memory on a GPU) it is copied
    once to ``device`` as float16 and :meth:`gather` indexes it there (``resident`` is True);
    otherwise batches are read from the memory map and uploaded (the fallback). Both give the
    same values: float16 -> float32 is exact.
    """

    def __init__(self, bags: np.ndarray, device: torch.device | str = "cpu",
                 max_bytes: int | None = None):
        self.device = torch.device(device)
        self.bags = bags
        self.shape = tuple(bags.shape)
        if max_bytes is None:
            max_bytes = CPU_RESIDENT_BYTES
            if self.device.type == "cuda":
                max_bytes = torch.cuda.mem_get_info(self.device)[0] // 2
        self.resident = bags.nbytes <= max_bytes
        self._held: torch.Tensor | None = None
        if self.resident:
            held = torch.empty(self.shape, dtype=torch.float16, device=self.device)
            for i, chunk in _slices(bags, max(1, (64 << 20) // max(1, bags[:1].nbytes))):
                held[i:i + len(chunk)] = torch.from_numpy(chunk)
            self._held = held

    def __len__(self) -> int:
        return self.shape[0]

    def gather(self, idx: np.ndarray | list[int]) -> torch.Tensor:
        """Bags ``idx`` as ``(len(idx), S, N, C)`` float32 on the device."""
        if self._held is not None:
            return self._held[torch.as_tensor(np.asarray(idx), device=self.device)].float()
        batch = np.asarray(self.bags[np.asarray(idx)], dtype=np.float32)
        return torch.from_numpy(batch).to(self.device)


def _slices(bags: np.ndarray, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, bags[start:start + step] as float16)`` in order, in new arrays.

    A whole-file memory map (as ``np.load(..., mmap_mode="r")`` returns) is read with plain
    file reads instead of through the map, so its pages never count in the process's
    resident memory on top of the copy.
    """
    n = len(bags)
    if (isinstance(bags, np.memmap) and isinstance(bags.base, mmap.mmap) and bags.filename
            and bags.dtype == np.float16 and bags.flags.c_contiguous):
        with open(bags.filename, "rb") as f:
            f.seek(bags.offset)
            for i in range(0, n, step):
                chunk = np.empty((min(step, n - i), *bags.shape[1:]), dtype=np.float16)
                if f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                    raise OSError(f"{bags.filename}: shorter than its header says")
                yield i, chunk
        return
    for i in range(0, n, step):
        yield i, np.array(bags[i:i + step], dtype=np.float16)


def segment_cuboid_labels(
    segment_ranges: np.ndarray,
    clip_frames: np.ndarray,
    cuboid_boxes: np.ndarray,
    gt_boxes: Mapping[int, Sequence[Sequence[float]]],
    overlap: float = 0.25,
) -> np.ndarray:
    """Per-segment, per-cuboid 0/1 targets for the boxes-supervised reference: ``(S, N)`` float32.

    Args:
        segment_ranges: ``(S, 2)`` half-open clip ranges, from
            :func:`stmil.timeline.segment_clip_ranges`.
        clip_frames: ``(n_clips, 2)`` half-open frame ranges ``[first, end)`` of each clip.
        cuboid_boxes: ``(N, 4)`` pixel boxes ``x1, y1, x2, y2`` of the cuboids.
        gt_boxes: frame index -> list of ground-truth boxes ``x1, y1, x2, y2`` on that frame.
        overlap: a cuboid is positive in a segment when some GT box covers at least this
            fraction of the cuboid's area on any frame of any clip of the segment.

    Each clip's labels come from :func:`stmil.cuboids.cuboid_labels`, so training targets and
    the evaluation's cuboid labels share one definition of overlap.
    """
    segment_ranges = np.asarray(segment_ranges, dtype=np.int64)
    clip_frames = np.asarray(clip_frames, dtype=np.int64)
    if clip_frames.ndim != 2 or clip_frames.shape[1] != 2 or len(clip_frames) == 0:
        raise ValueError(f"clip_frames must be (n_clips >= 1, 2), got shape {clip_frames.shape}")
    clip_pos = np.stack(
        [
            cuboid_labels(cuboid_boxes, [gt_boxes.get(f, []) for f in range(first, end)], overlap)
            for first, end in clip_frames
        ]
    )  # (n_clips, N) bool
    labels = np.zeros((len(segment_ranges), clip_pos.shape[1]), dtype=np.float32)
    for s, (start, end) in enumerate(segment_ranges):
        labels[s] = clip_pos[start:end].any(axis=0)
    return labels


# --- the bag cache: every bag of a training in one preallocated file ---------------------------


def build_bag_cache(features: Sequence[np.ndarray], n_segments: int, grid1: bool, path: Path,
                    progress: bool = False) -> np.ndarray:
    """The bags of videos' features (each ``(n_clips, N, C)``, :func:`make_bag`) in one
    memory-mapped float16 file at ``path``: ``(n_videos, S, N, C)``, read-only.

    The file's blocks are allocated before it is mapped (:func:`allocate_npy`), so a full disk
    is an ``OSError`` naming it, not a bus error on a sparse file.
    """
    n = 1 if grid1 else features[0].shape[1]
    shape = (len(features), n_segments, n, features[0].shape[2])
    bags = allocate_npy(path, np.dtype(np.float16), shape)
    for i, x in enumerate(tqdm(features, desc="bags", disable=not progress, leave=False)):
        bags[i] = make_bag(x, n_segments, grid1=grid1)
    bags.flush()
    del bags
    return np.load(path, mmap_mode="r")


def allocate_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` file of ``shape`` with every block allocated, mapped for writing.

    ``np.lib.format.open_memmap`` makes a sparse file: on a full disk, writing through the map
    then kills the process with SIGBUS. Here the blocks are reserved first
    (``posix_fallocate``, or written with zeros where that is missing), so a full disk is an
    ``OSError`` (ENOSPC) naming ``path``, and the partial file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(shape)}
    try:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_2_0(f, header)
            offset = f.tell()
            f.flush()
            _reserve(f.fileno(), offset, nbytes)
    except OSError as e:
        path.unlink(missing_ok=True)
        code = e.errno or errno.EIO
        raise OSError(code, f"{os.strerror(code)} (allocating the {nbytes / 2**20:.0f} MiB bag "
                      "cache; free space or train on a smaller dataset)", str(path)) from e
    return np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=shape)


def _reserve(fd: int, offset: int, nbytes: int) -> None:
    """Allocate ``nbytes`` after ``offset`` for real: ``posix_fallocate``, else write zeros."""
    if nbytes == 0:
        return
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, offset, nbytes)
        return
    chunk = bytes(1 << 20)
    os.lseek(fd, offset, os.SEEK_SET)
    left = nbytes
    while left:
        left -= os.write(fd, chunk[: min(left, len(chunk))])
