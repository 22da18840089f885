"""The normal-memory gate (``gate: memory``): a cuboid is anomalous only where it is new.

Weak cuboid MIL scores every cuboid that looks like the events it was trained on, including
benign motion of the same low-level kind (a fast walker, a flickering lamp) that normal videos
hold too. The gate remembers what normal looks like: a bank of L2-normalised instance features
of the normal training videos. At test time an instance's *novelty* is one minus its cosine
similarity to the nearest bank entry, mapped to ``[0, 1]`` by a scale measured on the normal
training videos themselves (each scored against the other videos' entries: leave one video
out), and the scorer's score is multiplied by it. Something the normal videos already showed
gets a gate near 0, wherever it is in the frame. See docs/method.md for the rule and its
measured effect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from stmil.mil.bags import l2_normalise

log = logging.getLogger(__name__)

#: Queries sampled from the normal training instances to measure the gate's scale.
CALIBRATION_QUERIES = 4096
#: Rows of queries compared with the bank at once (bounds the similarity matrix's memory).
CHUNK = 1024


class MemoryGate(nn.Module):
    """Novelty of instances against a bank of normal ones: ``(..., C) -> (...)`` in ``[0, 1]``.

    Buffers (saved with the scorer): ``bank`` ``(M, C)`` L2-normalised normal instances and
    ``scale`` ``(2,)``: the novelty mapped to 0 and to 1. The input must be L2-normalised like
    the scorer's.
    """

    def __init__(self, bank: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("bank", bank.float().contiguous())
        self.register_buffer("scale", scale.float().reshape(2))

    def novelty(self, x: Tensor) -> Tensor:
        """``(..., C) -> (...)``: one minus the cosine similarity to the nearest bank entry."""
        flat = x.reshape(-1, x.shape[-1]).to(self.bank.dtype)
        best = torch.cat([(rows @ self.bank.T).amax(dim=1) for rows in flat.split(CHUNK)])
        return (1 - best).reshape(x.shape[:-1])

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = self.scale[0], self.scale[1]
        return ((self.novelty(x) - lo) / (hi - lo)).clamp(0, 1)


def build_memory(instances: Sequence[np.ndarray], size: int, seed: int) -> MemoryGate:
    """The gate of the normal training videos' instances.

    Args:
        instances: one ``(n_i, C)`` array per normal training video (any float dtype, a memory
            map is fine: only the sampled rows are read), the scorer's inputs before L2
            normalisation: every cuboid of every clip (a view of the feature file), or each
            clip's mean for frame instances (computed by the caller, reading every clip).
            At least two videos.
        size: most bank entries kept (a seeded uniform sample when there are more).
        seed: the sample's seed.

    The scale: novelties of up to :data:`CALIBRATION_QUERIES` sampled normal instances, each
    against the bank entries of the *other* videos; the median maps to 0 (half of normal
    instances are gated off entirely) and the maximum to 1. Memory: the bank and the sampled
    rows, never all instances at once (UCF-Crime's normal videos hold tens of GB of them).
    """
    if len(instances) < 2:
        raise ValueError(f"the memory gate needs at least 2 normal training videos, got "
                         f"{len(instances)}")
    rng = np.random.default_rng(seed)
    starts = np.cumsum([0] + [len(x) for x in instances])
    total = int(starts[-1])
    keep = np.sort(rng.choice(total, size, replace=False)) if total > size else np.arange(total)
    pick = np.sort(rng.choice(total, min(CALIBRATION_QUERIES, total), replace=False))
    bank, bank_owner = _rows(instances, starts, keep)
    queries, query_owner = _rows(instances, starts, pick)
    loo = []
    for q, o in zip(queries.split(CHUNK), query_owner.split(CHUNK)):
        sim = q @ bank.T
        sim[o[:, None] == bank_owner[None, :]] = -torch.inf  # leave the query's video out
        loo.append(1 - sim.amax(dim=1))
    loo = torch.cat(loo)
    loo = loo[torch.isfinite(loo)]  # a query whose video alone fills the bank has no neighbour
    if len(loo) == 0:
        raise ValueError(f"the {len(bank)} sampled bank entries all come from one video, so "
                         "no normal instance can be scored against another video; raise "
                         "memory_size")
    lo, hi = float(loo.median()), float(loo.max())
    if not hi > lo:
        log.warning(f"memory gate: every sampled normal instance is equally novel ({lo:.4f}), "
                    "so the gate is a step: 0 at or below it, 1 above; more normal videos or a "
                    "larger memory_size give it a scale")
        hi = lo + 1e-6
    return MemoryGate(bank, torch.tensor([lo, hi]))


def _rows(instances: Sequence[np.ndarray], starts: np.ndarray, index: np.ndarray
          ) -> tuple[Tensor, Tensor]:
    """The rows ``index`` of the videos' instances laid end to end, L2-normalised ``(K, C)``,
    and the video each comes from ``(K,)``."""
    owner = np.searchsorted(starts, index, side="right") - 1
    rows = [np.asarray(instances[v][index[owner == v] - starts[v]], dtype=np.float32)
            for v in np.unique(owner)]
    return torch.from_numpy(l2_normalise(np.concatenate(rows))), torch.from_numpy(owner)
