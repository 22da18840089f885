"""The G x G cuboid grid: pooling feature maps into cuboids, each cuboid's pixel box in the
frame, and a cuboid map drawn back onto the frame.

Only :func:`pool_cuboids` needs torch, and imports it when called: metrics and overlays use
the geometry without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


def pool_cuboids(fmap: Tensor, grid: int = 7) -> Tensor:
    """``(B, C, T', H', W') -> (B, G*G, C)``: mean over time, then average-pool to G x G.

    Cuboids are in row-major order (row 0 is the top of the frame). For Mixed_4e of a 224x224
    clip (14x14 map) and G = 7, each cuboid is the mean of a 2x2 block of cells.
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
