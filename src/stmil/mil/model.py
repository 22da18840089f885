"""The instance scorer MLP and the losses: Sultani's MIL ranking loss (``method: paper``), the
top-k MIL loss with every normal instance a negative (``method: topk``), the spatiotemporal
total-variation term, the boxes-supervised BCE and the self-training BCE.

Scores live in tensors shaped ``(bags, S, N)``: S temporal segments of N cuboids per bag
(``N = 1`` for the video-segment baseline, else ``N = G * G`` in row-major grid order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BagDropout(nn.Module):
    """Dropout whose mask is shared by every instance of a bag.

    Input ``(B, ..., F)``: one mask of ``F`` units per bag (first dimension), broadcast over
    the segments and cuboids in between. Per-instance masks would make the max over a bag's
    32 x 49 instances pick the luckiest mask rather than the most anomalous instance, and the
    ranking loss would learn noise (measured on planted-signal features: it does not learn at
    all with per-instance dropout 0.6, and learns fully with shared masks). A 2-D input
    ``(M, F)`` gets ordinary per-row dropout.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Scorer(nn.Module):
    """MLP scoring each instance: ``(..., C) -> (...)`` anomaly scores in ``[0, 1]``.

    ``C -> hidden`` (ReLU, dropout) ``-> mid`` (dropout) ``-> 1`` (sigmoid). The ``mid`` layer
    is linear, with no activation, exactly as in Sultani et al.'s Keras code. Dropout masks are
    drawn per bag (:class:`BagDropout`) when the input is ``(B, S, N, C)``. Weights use
    Glorot/Xavier-normal initialisation and biases zeros (Keras ``glorot_normal`` defaults), so
    construction is deterministic given ``torch.manual_seed``.
    """

    def __init__(
        self, in_dim: int = 528, hidden: int = 512, mid: int = 32, dropout: float = 0.6
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            BagDropout(dropout),
            nn.Linear(hidden, mid),
            BagDropout(dropout),
            nn.Linear(mid, 1),
            nn.Sigmoid(),
        )
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
        self.gate: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        """``(..., C) -> (...)``; times the gate's ``(...)`` values when one is attached (the
        normal-memory gate of :mod:`stmil.mil.memory`, attached after training)."""
        s = self.net(x).squeeze(-1)
        return s if self.gate is None else s * self.gate(x)


def mil_ranking_loss(
    pos: Tensor, neg: Tensor, lambda1: float = 8e-5, lambda2: float = 8e-5
) -> tuple[Tensor, dict[str, Tensor]]:
    """Sultani et al.'s MIL ranking loss over every anomalous x normal pair of a batch.

    Args:
        pos: ``(A, S, N)`` scores of the anomalous bags.
        neg: ``(B, S, N)`` scores of the normal bags.

    Returns:
        ``hinge + lambda1 * smoothness + lambda2 * sparsity`` (a scalar) and the three unweighted
        terms:

        - hinge: ``sum_{a,b} max(0, 1 - max_{s,n} pos[a] + max_{s,n} neg[b])``;
        - smoothness: ``sum (pos[:, s+1, n] - pos[:, s, n]) ** 2`` over anomalous bags, adjacent
          segments and cuboids;
        - sparsity: the sum of all anomalous scores.
    """
    if pos.ndim != 3 or neg.ndim != 3 or pos.shape[1:] != neg.shape[1:]:
        raise ValueError(f"expected pos (A, S, N) and neg (B, S, N), got {pos.shape}, {neg.shape}")
    pos_max = pos.flatten(1).amax(dim=1)  # (A,)
    neg_max = neg.flatten(1).amax(dim=1)  # (B,)
    hinge = F.relu(1.0 - pos_max[:, None] + neg_max[None, :]).sum()
    smoothness = (pos[:, 1:, :] - pos[:, :-1, :]).pow(2).sum()
    sparsity = pos.sum()
    total = hinge + lambda1 * smoothness + lambda2 * sparsity
    return total, {"hinge": hinge, "smoothness": smoothness, "sparsity": sparsity}


def topk_mil_loss(
    pos: Tensor, neg: Tensor, k: int = 3, neg_weight: float = 1.0, lambda1: float = 8e-5,
    lambda2: float = 8e-5
) -> tuple[Tensor, dict[str, Tensor]]:
    """Top-k MIL: the ranking hinge on the mean of each anomalous bag's ``k`` best instances,
    and every instance of every normal bag pushed to 0.

    Args:
        pos: ``(A, S, N)`` scores of the anomalous bags.
        neg: ``(B, S, N)`` scores of the normal bags.
        k: instances averaged per anomalous bag (clamped to ``S * N``); ``k = 1`` is the max.
        neg_weight: weight of the negatives term.

    Returns:
        ``hinge + neg_weight * negatives + lambda1 * smoothness + lambda2 * sparsity`` and the
        unweighted terms:

        - hinge: ``sum_{a,b} max(0, 1 - topk_mean(pos[a]) + max_{s,n} neg[b])``;
        - negatives: ``A * sum_b mean_{s,n} -log(1 - neg[b, s, n])``: each normal bag's mean
          binary cross-entropy against label 0, counted once per anomalous bag so that a normal
          bag weighs as much here as in the ``A`` hinge pairs it is in;
        - smoothness, sparsity: as in :func:`mil_ranking_loss`.
    """
    if pos.ndim != 3 or neg.ndim != 3 or pos.shape[1:] != neg.shape[1:]:
        raise ValueError(f"expected pos (A, S, N) and neg (B, S, N), got {pos.shape}, {neg.shape}")
    k = max(1, min(k, pos.shape[1] * pos.shape[2]))
    pos_top = pos.flatten(1).topk(k, dim=1).values.mean(dim=1)  # (A,)
    neg_max = neg.flatten(1).amax(dim=1)  # (B,)
    hinge = F.relu(1.0 - pos_top[:, None] + neg_max[None, :]).sum()
    negatives = len(pos) * _bce(
        neg, torch.zeros_like(neg), reduction="none").flatten(1).mean(dim=1).sum()
    smoothness = (pos[:, 1:, :] - pos[:, :-1, :]).pow(2).sum()
    sparsity = pos.sum()
    total = hinge + neg_weight * negatives + lambda1 * smoothness + lambda2 * sparsity
    return total, {"hinge": hinge, "negatives": negatives, "smoothness": smoothness,
                   "sparsity": sparsity}


def total_variation(pos: Tensor) -> Tensor:
    """Spatiotemporal total variation of anomalous score maps: a scalar.

    ``pos`` is ``(A, S, N)`` with ``N = G * G`` cuboids in row-major order. The sum of
    ``|difference|`` between 4-neighbour cuboids of the same segment (rows and columns of the
    G x G map) and between the same cuboid in adjacent segments. With ``N = 1`` only the
    temporal part remains.
    """
    a, s, n = pos.shape
    g = int(round(n ** 0.5))
    if g * g != n:
        raise ValueError(f"expected N = G * G cuboids per segment, got N = {n}")
    maps = pos.reshape(a, s, g, g)
    return ((maps[:, :, 1:, :] - maps[:, :, :-1, :]).abs().sum()
            + (maps[:, :, :, 1:] - maps[:, :, :, :-1]).abs().sum()
            + (maps[:, 1:] - maps[:, :-1]).abs().sum())


def weak_loss(pos: Tensor, neg: Tensor, method: str = "paper", k: int = 3,
              neg_weight: float = 1.0, lambda1: float = 8e-5, lambda2: float = 8e-5,
              lambda_tv: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """The video-label loss of a batch: ``method`` ``paper`` (:func:`mil_ranking_loss`, exactly)
    or ``topk`` (:func:`topk_mil_loss`), plus ``lambda_tv`` * :func:`total_variation` of the
    anomalous bags when ``lambda_tv > 0``. ``pos`` ``(A, S, N)``, ``neg`` ``(B, S, N)``."""
    if method == "paper":
        total, parts = mil_ranking_loss(pos, neg, lambda1, lambda2)
    elif method == "topk":
        total, parts = topk_mil_loss(pos, neg, k, neg_weight, lambda1, lambda2)
    else:
        raise ValueError(f"unknown method {method!r}")
    if lambda_tv > 0:
        parts["tv"] = total_variation(pos)
        total = total + lambda_tv * parts["tv"]
    return total, parts


def boxes_bce_loss(scores: Tensor, targets: Tensor, pos_weight: float | None = None) -> Tensor:
    """Mean binary cross-entropy of instance scores against box-derived 0/1 targets.

    The boxes-supervised reference (an upper bound). ``scores`` and ``targets`` are
    ``(B, S, N)``; ``scores`` are probabilities (the :class:`Scorer`'s sigmoid output). With
    ``pos_weight`` each positive instance's term is multiplied by it (counter class imbalance:
    few cuboids hold the anomaly); the mean is still over all instances.
    """
    if scores.shape != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} differ")
    targets = targets.to(scores.dtype)
    weight = None if pos_weight is None else 1.0 + (pos_weight - 1.0) * targets
    return _bce(scores, targets, weight=weight)


def balanced_bce(pos: Tensor, neg: Tensor) -> Tensor:
    """Class-balanced binary cross-entropy of pseudo-labelled scores (self-training).

    ``pos`` ``(P,)`` scores labelled 1 and ``neg`` ``(M,)`` scores labelled 0 (probabilities):
    ``(mean_i -log pos_i + mean_j -log(1 - neg_j)) / 2``, so each class weighs half whatever
    their counts (a few positives per anomalous video against every normal cuboid).
    """
    return (_bce(pos, torch.ones_like(pos)) + _bce(neg, torch.zeros_like(neg))) / 2


def _bce(scores: Tensor, targets: Tensor, **kw) -> Tensor:
    """``F.binary_cross_entropy``, but NaN (not a RuntimeError) for non-finite scores, so that
    a diverged training is reported by the trainer's finiteness check."""
    if not torch.isfinite(scores).all():
        shape = scores.shape if kw.get("reduction") == "none" else ()
        return torch.full(shape, float("nan"), dtype=scores.dtype, device=scores.device)
    return F.binary_cross_entropy(scores, targets, **kw)


@torch.no_grad()
def flush_denormals(model: Scorer) -> None:
    """Zero the weights that weight decay has shrunk below the smallest normal float.

    Adagrad's weight decay shrinks the weights of dead ReLU units geometrically into denormal
    floats, which make CPU matmuls up to 100x slower (measured with 2 threads; the per-thread
    ``torch.set_flush_denormal`` does not reach the intra-op worker threads).
    """
    for p in model.parameters():
        p.masked_fill_(p.abs() < torch.finfo(p.dtype).tiny, 0.0)
