"""The G x G cuboid grid: pooling feature maps into cuboids, each cuboid's pixel box in the
frame, box overlaps and cuboid labels from GT boxes, the predicted box of a map, and a cuboid
map drawn back onto the frame.

Boxes are ``(x1, y1, x2, y2)`` float pixels in the original frame, x2/y2 exclusive. Only
:func:`pool_cuboids` needs torch, and imports it when called: metrics and overlays use the
geometry without loading it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from torch import Tensor

#: Absolute slack on the cuboid-overlap threshold, so that an exact 25% overlap computed in
#: floating point (e.g. on a 320-pixel frame cut into 7 columns) still counts as 25%.
OVERLAP_EPS = 1e-9


def pool_cuboids(fmap: Tensor, grid: int = 7) -> Tensor:
    """``(B, C, T', H', W') -> (B, G*G, C)``: mean over time, then average-pool to G x G.

    Cuboids are in row-major order (row 0 is the top of the frame). For Mixed_4e of a 224x224
    clip (14x14 map) and G = 7, each cuboid is the mean of a 2x2 block of cells. G must not
    exceed the map side M (:meth:`~stmil.features.pipeline_config.ExtractSettings.check_grid`).
    Where G does not divide M, cuboid ``i`` (along each axis) is the mean of cells
    ``floor(i * M / G)`` to ``ceil((i + 1) * M / G) - 1`` (adaptive average pooling), so
    neighbouring cuboids may share a row or column of cells; :func:`cuboid_boxes` still cuts
    the frame into G equal parts.
    """
    import torch.nn.functional as F

    pooled = F.adaptive_avg_pool2d(fmap.mean(dim=2), grid)  # (B, C, G, G)
    return pooled.flatten(2).transpose(1, 2)


def cuboid_boxes(width: int, height: int, grid: int = 7) -> np.ndarray:
    """Pixel box of each cuboid in the original frame: ``(G*G, 4)`` as ``x1, y1, x2, y2``.

    The whole frame (no crop) is resized to the network input, so the grid divides the frame
    uniformly. Boxes are in continuous pixel coordinates, row-major, x2/y2 exclusive.
    """
    xs = np.linspace(0.0, float(width), grid + 1)
    ys = np.linspace(0.0, float(height), grid + 1)
    return np.array(
        [[xs[c], ys[r], xs[c + 1], ys[r + 1]] for r in range(grid) for c in range(grid)],
        dtype=np.float64,
    )


def frame_heatmap(cuboid_scores: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest upsampling of a ``(G*G,)`` row-major cuboid map (or ``(G, G)``) to a
    ``(height, width)`` float64 heatmap.

    Each pixel takes the score of the cuboid box that contains its centre, so every cuboid fills
    its box exactly (:func:`cuboid_boxes`); a pixel whose centre lies on an edge goes to the
    right or lower cuboid (x2/y2 are exclusive). Exact integer arithmetic.
    """
    s = np.asarray(cuboid_scores, dtype=np.float64).ravel()
    grid = int(round(np.sqrt(s.size)))
    if grid < 1 or grid * grid != s.size:
        raise ValueError(f"cuboid_scores must hold G*G values, got {s.size}")
    cols = ((2 * np.arange(width) + 1) * grid) // (2 * width)
    rows = ((2 * np.arange(height) + 1) * grid) // (2 * height)
    return s.reshape(grid, grid)[rows[:, None], cols[None, :]]


def as_boxes(boxes: ArrayLike) -> np.ndarray:
    """``(K, 4)`` float64 boxes; an empty input gives ``(0, 4)``."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {b.shape}")
    return b


def intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas ``(N, M)`` of boxes ``a (N, 4)`` and ``b (M, 4)``."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0.0, None) * np.clip(h, 0.0, None)


def box_overlap_fraction(boxes_a: ArrayLike, boxes_b: ArrayLike) -> np.ndarray:
    """``(N, M)``: intersection area of ``a_i`` and ``b_j`` divided by the area of ``a_i``.

    ``boxes_a``: ``(N, 4)`` with positive areas; ``boxes_b``: ``(M, 4)``.
    """
    a, b = as_boxes(boxes_a), as_boxes(boxes_b)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    if np.any(area <= 0):
        raise ValueError("every box in boxes_a must have positive area")
    return intersection_areas(a, b) / area[:, None]


def cuboid_labels(
    cuboid_boxes: np.ndarray, gt_boxes_per_frame: Sequence[ArrayLike], overlap: float = 0.25
) -> np.ndarray:
    """``(N,)`` bool: cuboid positive if a GT box on any frame of the clip covers >= ``overlap``.

    ``cuboid_boxes``: ``(N, 4)``; ``gt_boxes_per_frame``: one ``(K_i, 4)`` array per frame of the
    clip (``K_i`` may be 0). Overlap is measured as a fraction of the cuboid's area.
    """
    cub = as_boxes(cuboid_boxes)
    pos = np.zeros(len(cub), dtype=bool)
    for gt in gt_boxes_per_frame:
        g = as_boxes(gt)
        if len(g):
            pos |= (box_overlap_fraction(cub, g) >= overlap - OVERLAP_EPS).any(axis=1)
    return pos


def predicted_boxes(maps: np.ndarray, boxes: np.ndarray, threshold: float | None = None
                    ) -> np.ndarray:
    """Box per clip ``(n_clips, 4)``: the top cuboid's, or the union of those >= threshold."""
    out = boxes[maps.argmax(axis=1)].copy()
    if threshold is not None:
        for k, row in enumerate(maps):
            hot = boxes[row >= threshold]
            if len(hot):
                out[k] = [*hot[:, :2].min(0), *hot[:, 2:].max(0)]
    return out
