"""Pseudo-label self-training after the MIL stage (``self_train`` rounds; issue 13, method 4).

Each round scores the training bags with the current model; the top cuboids of the top-scoring
segments of every anomalous training video become positives, every cuboid of every normal
training video a negative (each iteration draws ``batch_normal`` normal bags, so memory stays
that of a MIL step), and the scorer is retrained with class-balanced BCE
(:func:`stmil.mil.model.balanced_bce`), continuing from the current model or from a fresh one.
Confirmation bias is guarded by the validation split (video labels only): a round is kept only
if its best video-level validation AUC is not below the model's; the first round that lowers it
is undone and ends self-training, since a further round would start from the same model and
pseudo-labels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from stmil.mil.bags import BagStore
from stmil.mil.config import TrainConfig
from stmil.mil.model import Scorer, balanced_bce, flush_denormals


def pseudo_positives(scores: np.ndarray, spans: np.ndarray, n_segments: int,
                     n_cuboids: int) -> np.ndarray:
    """The pseudo-positive instances of one anomalous bag: ``(S, N)`` bool.

    ``scores`` ``(S, N)`` are the bag's instance scores and ``spans`` ``(S, 2)`` each segment's
    clip span ``[start, end)``. The ``n_segments`` segments with the highest max score are
    chosen, a clip span counting once (a video with fewer clips than segments repeats clips in
    several segments: the first of them is taken), and in each the ``n_cuboids`` highest-scoring
    cuboids. Ties go to the lower index.
    """
    mask = np.zeros(scores.shape, dtype=bool)
    seen: set[tuple[int, int]] = set()
    for s in np.argsort(-scores.max(axis=1), kind="stable"):
        span = (int(spans[s][0]), int(spans[s][1]))
        if len(seen) == n_segments:
            break
        if span in seen:
            continue
        seen.add(span)
        mask[s, np.argsort(-scores[s], kind="stable")[:n_cuboids]] = True
    return mask


@torch.no_grad()
def bag_scores(model: Scorer, bags: np.ndarray, idx: np.ndarray, dev: torch.device
               ) -> list[np.ndarray]:
    """Eval-mode instance scores of ``bags[i]`` for ``i`` in ``idx``: each ``(S, N)``."""
    model.eval()
    return [model(torch.from_numpy(np.asarray(bags[i], dtype=np.float32)).to(dev)).cpu().numpy()
            for i in idx]


def self_train(model: Scorer, new_scorer: Callable[[], Scorer], store: BagStore,
               bags: np.ndarray, anom: np.ndarray, norm: np.ndarray, spans: list[np.ndarray],
               val_auc: Callable[[Scorer], float], cfg: TrainConfig, rng: np.random.Generator,
               iteration: int) -> tuple[Scorer, list[dict]]:
    """Run ``cfg.self_train`` rounds from ``model``; the model kept and the history rows.

    ``bags`` ``(n_videos, S, N, C)`` (also held by ``store``), ``anom`` and ``norm`` the
    training videos' indices, ``spans[i]`` video ``i``'s segment clip spans ``(S, 2)``,
    ``val_auc`` the validation score of a model, ``iteration`` the MIL stage's last iteration
    (rows continue its count). Each row has ``iteration``, ``loss`` (the BCE) and ``round``,
    ``val_auc`` at each check, and ``kept`` (1 or 0) on the round's last row.
    """
    dev = next(model.parameters()).device
    best_auc = val_auc(model)
    rows: list[dict] = []
    for r in range(1, cfg.self_train + 1):
        masks = torch.from_numpy(np.stack([
            pseudo_positives(s, spans[i], cfg.self_train_segments, cfg.self_train_cuboids)
            for i, s in zip(anom, bag_scores(model, bags, anom, dev))])).to(dev)
        cand = new_scorer() if cfg.self_train_init == "fresh" else copy.deepcopy(model)
        optim = torch.optim.Adagrad(cand.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        round_auc, round_best = -1.0, None
        for j in range(1, cfg.self_train_iterations + 1):
            cand.train()
            a = rng.choice(len(anom), size=min(cfg.batch_anomalous, len(anom)), replace=False)
            n = rng.choice(norm, size=min(cfg.batch_normal, len(norm)), replace=False)
            scores = cand(store.gather(np.concatenate([anom[a], n])))
            loss = balanced_bce(scores[: len(a)][masks[a]], scores[len(a):].flatten())
            optim.zero_grad()
            loss.backward()
            optim.step()
            flush_denormals(cand)
            iteration += 1
            row = {"iteration": iteration, "loss": loss.detach().item(), "round": r}
            if j % cfg.val_every == 0 or j == cfg.self_train_iterations:
                row["val_auc"] = val_auc(cand)
                if row["val_auc"] > round_auc:
                    round_auc = row["val_auc"]
                    round_best = {k: v.detach().clone() for k, v in cand.state_dict().items()}
            rows.append(row)
        kept = round_auc >= best_auc
        rows[-1]["kept"] = int(kept)
        if not kept:
            break
        cand.load_state_dict(round_best)
        model, best_auc = cand, round_auc
    return model, rows

