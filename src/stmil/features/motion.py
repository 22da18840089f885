"""Per-cuboid motion energy, and the motion gate built on it (issue 13's motion prior).

A cuboid's motion energy in a clip is the mean absolute difference of consecutive frames
inside its cell, on the very model input its features come from (the whole frame resized to
``size`` x ``size``, values in ``[-1, 1]``; :mod:`stmil.features.resize`), averaged over the
three colour channels: 0 for a static cell, larger the more it changes. ``extract`` stores it
with the features (``"motion"`` in ``<id>.json``, rounded to 6 decimals; docs/formats.md) and
``watch`` computes it on each live clip, with this one definition (:data:`MOTION`).

The gate (``train --motion gate``, the default detector's): ``min(1, m / q)``, where ``q`` is
the :data:`PERCENTILE`-th percentile of the motion energy of every cuboid of every clip of
the normal training videos. A cuboid that moves at least as much as the busiest tenth of
normal cuboids keeps its score; a static one loses it in proportion. docs/method.md has the
rule and its measured effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Names the definition; every feature file with motion energy records it (``motion_rule``).
MOTION = "mean-abs-frame-difference"
#: The gate's scale: this percentile of the normal training videos' cuboid motion energy.
PERCENTILE = 90
DECIMALS = 6


def motion_energy(clips: Tensor, grid: int) -> np.ndarray:
    """Model input ``(B, 3, T, S, S)`` -> motion energy ``(B, G*G)`` float64, row-major cuboids
    like the features, rounded to :data:`DECIMALS` (as stored). Runs on the clips' device."""
    with torch.no_grad():
        d = (clips[:, :, 1:] - clips[:, :, :-1]).abs().mean(dim=(1, 2))  # (B, S, S)
        m = F.adaptive_avg_pool2d(d[:, None], grid).flatten(1)
    return np.round(m.double().cpu().numpy(), DECIMALS)


def motion_scale(motions: Sequence[np.ndarray]) -> float:
    """The gate's ``q``: :data:`PERCENTILE`-th percentile of every value of ``motions`` (the
    normal training videos' ``(n_clips, G*G)`` arrays); at least 1e-6 (a static scene)."""
    return max(float(np.percentile(np.concatenate([np.ravel(m) for m in motions]),
                                   PERCENTILE)), 1e-6)


def motion_gate(motion: np.ndarray, scale: float) -> np.ndarray:
    """``min(1, motion / scale)``, same shape, float32."""
    return np.minimum(1.0, np.asarray(motion, np.float64) / scale).astype(np.float32)
