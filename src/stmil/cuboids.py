"""Feature maps -> G x G spatiotemporal cuboids, and each cuboid's pixel box in the frame."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor


def pool_cuboids(fmap: Tensor, grid: int = 7) -> Tensor:
    """``(B, C, T', H', W') -> (B, G*G, C)``: mean over time, then average-pool to G x G.

    Cuboids are in row-major order (row 0 is the top of the frame). For Mixed_4e of a 224x224
    clip (14x14 map) and G = 7, each cuboid is the mean of a 2x2 block of cells.
    """
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
