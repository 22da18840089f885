"""The metrics papers report, from a test set's cuboid maps (definitions: docs/metrics.md).

:func:`paper_metrics` turns per-video maps into the samples the pure functions of
:mod:`stmil.evaluation.metrics` take: anomalous-only frame AUC, AP both ways, patch AUC / AP,
TIoU and localization false positives. A metric that the test set cannot support (no anomalous
video, no box) is ``None``. :func:`thresholded_metrics` gives the metrics that count scores at or
above a threshold (:data:`THRESHOLDED`), so that they can be computed at another one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from stmil.cuboids import cuboid_boxes, cuboid_labels
from stmil.evaluation import metrics as M
from stmil.features.store import VideoFeatures
from stmil.timeline import frame_labels, frame_to_clip

#: The metrics that count scores ``>= threshold``; ``stmil evaluate`` computes them at the run's
#: calibrated threshold when it has one, else at :data:`PAPER_THRESHOLD` (docs/metrics.md).
THRESHOLDED = ("false_alarm_rate", "tiou", "loc_false_positives")
#: The threshold of the papers' TIoU (Liu and Ma) and false alarm rate (Sultani et al.).
PAPER_THRESHOLD = 0.5


def _gt(v: VideoFeatures, f: int) -> np.ndarray:
    """``(K, 4)`` GT boxes of frame ``f`` of ``v`` (``K`` may be 0)."""
    return np.array(v.record.boxes.get(f, []), dtype=np.float64).reshape(-1, 4)


def patch_samples(v: VideoFeatures, maps: np.ndarray, frame_scores: np.ndarray,
                  overlap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Weighted patch samples of one video: gated scores, labels, weights, each ``(S,)``.

    Every cuboid of every frame is a patch (``maps``: ``(n_clips, N)``, ``frame_scores``:
    ``(n_frames,)``). Patches of a normal video, and of an anomalous video's frames outside
    its anomalous intervals, are negatives; a frame with GT boxes labels its cuboids by
    :func:`~stmil.cuboids.cuboid_labels`. Frames inside an interval without a box
    (unknown where) are left out, and so is an anomalous video without boxes (``None``).
    Identical patches (same clip, same frame score, no box) are merged into one weighted row.
    """
    n = v.meta.n_frames
    if v.record.label == 1 and not v.record.has_boxes:
        return None
    clip_of = frame_to_clip(v.clip_ranges, n)
    inside = frame_labels(list(v.record.intervals), n)
    boxed = np.zeros(n, dtype=bool)
    boxed[[f for f, b in v.record.boxes.items() if len(b) and 0 <= f < n]] = True
    boxes = cuboid_boxes(v.meta.width, v.meta.height, v.meta.grid)
    scores, labels, weights = [], [], []
    plain = np.flatnonzero(~boxed & ~inside)  # negatives: merge frames of one clip and score
    if plain.size:
        keys = np.stack([clip_of[plain].astype(np.float64), frame_scores[plain]], axis=1)
        uniq, counts = np.unique(keys, axis=0, return_counts=True)
        gated = M.gated_cuboid_scores(maps[uniq[:, 0].astype(int)], uniq[:, 1])
        scores.append(gated.ravel())
        labels.append(np.zeros(gated.size, dtype=bool))
        weights.append(np.repeat(counts, maps.shape[1]).astype(np.float64))
    for f in np.flatnonzero(boxed):
        gated = M.gated_cuboid_scores(maps[clip_of[f]][None], frame_scores[f:f + 1])
        scores.append(gated.ravel())
        labels.append(cuboid_labels(boxes, [_gt(v, f)], overlap))
        weights.append(np.ones(gated.size))
    if not scores:
        return None
    return np.concatenate(scores), np.concatenate(labels), np.concatenate(weights)


def paper_metrics(videos: Sequence[VideoFeatures], maps: Sequence[np.ndarray],
                  frame_scores: Sequence[np.ndarray], frame_labels: Sequence[np.ndarray],
                  overlap: float = 0.25, threshold: float = 0.5) -> dict:
    """``frame_auc_anomalous``, ``frame_ap_trapezoid``, ``patch_auc``, ``patch_ap``, ``tiou``
    and ``loc_false_positives`` of a test set.

    ``maps``: per video ``(n_clips, G*G)``; ``frame_scores`` / ``frame_labels``: per video
    ``(n_frames,)``, as :func:`~stmil.evaluation.evaluate.compute_metrics` computed them.
    """
    video_labels = np.array([v.record.label for v in videos])
    patches = [p for v, m, fs in zip(videos, maps, frame_scores, strict=True)
               if (p := patch_samples(v, m, fs, overlap)) is not None]
    out = {
        "frame_auc_anomalous": _try(M.frame_auc_anomalous, frame_scores, frame_labels,
                                    video_labels),
        "frame_ap_trapezoid": _try(M.frame_ap_trapezoid, frame_scores, frame_labels),
        "patch_auc": None, "patch_ap": None,
        "tiou": tiou_of(videos, maps, frame_scores, threshold),
        "loc_false_positives": loc_false_positives(videos, maps, threshold),
    }
    if patches:
        s, y, w = (np.concatenate(x) for x in zip(*patches))
        out["patch_auc"] = _try(M.patch_auc, s, y, w)
        out["patch_ap"] = _try(M.patch_ap, s, y, w)
    return out


def thresholded_metrics(videos: Sequence[VideoFeatures], maps: Sequence[np.ndarray],
                        frame_scores: Sequence[np.ndarray], threshold: float) -> dict:
    """The :data:`THRESHOLDED` metrics at ``threshold``: ``false_alarm_rate`` (frames of the
    normal videos), ``tiou`` and ``loc_false_positives``, each ``None`` where the test set
    cannot give it. ``maps``: per video ``(n_clips, G*G)``; ``frame_scores``: per video
    ``(n_frames,)``."""
    normal = [fs for v, fs in zip(videos, frame_scores, strict=True) if v.record.label == 0]
    return {"false_alarm_rate": M.false_alarm_rate(normal, threshold) if normal else None,
            "tiou": tiou_of(videos, maps, frame_scores, threshold),
            "loc_false_positives": loc_false_positives(videos, maps, threshold)}


def tiou_of(videos: Sequence[VideoFeatures], maps: Sequence[np.ndarray],
            frame_scores: Sequence[np.ndarray], threshold: float) -> float | None:
    """TIoU over every frame with a GT box of the anomalous videos (each predicts its clip's
    top region box), or ``None`` when there is no such frame."""
    pred, fs_boxed, gt_frames = [], [], []
    for v, m, fs in zip(videos, maps, frame_scores, strict=True):
        if v.record.label != 1 or not v.record.has_boxes:
            continue
        n, ranges = v.meta.n_frames, v.clip_ranges
        boxes = cuboid_boxes(v.meta.width, v.meta.height, v.meta.grid)
        clip_of = frame_to_clip(ranges, n)
        frames = np.array(sorted(f for f in v.record.boxes if 0 <= f < n and len(_gt(v, f))),
                          dtype=int)
        pred.append(M.top_region_boxes(m[clip_of[frames]], boxes))
        fs_boxed.append(fs[frames])
        gt_frames += [_gt(v, f) for f in frames]
    if not gt_frames:
        return None
    return M.tiou(np.concatenate(pred), np.concatenate(fs_boxed), gt_frames, threshold)


def loc_false_positives(videos: Sequence[VideoFeatures], maps: Sequence[np.ndarray],
                        threshold: float) -> float | None:
    """Localization false positives over every anomalous clip (a clip holding a frame with a
    GT box), or ``None`` when there is none; each video uses its own cuboid boxes."""
    total, n_clips = 0.0, 0
    for v, m in zip(videos, maps, strict=True):
        if v.record.label != 1 or not v.record.has_boxes:
            continue
        ranges = v.clip_ranges
        clip_gt: dict[int, list[np.ndarray]] = {}
        for f in v.record.boxes:
            gt = _gt(v, f)
            if len(gt):
                for k in np.flatnonzero((ranges[:, 0] <= f) & (f < ranges[:, 1])):
                    clip_gt.setdefault(int(k), []).append(gt)
        if clip_gt:
            ks = sorted(clip_gt)
            boxes = cuboid_boxes(v.meta.width, v.meta.height, v.meta.grid)
            mean = M.localization_false_positives(
                m[ks], boxes, [np.concatenate(clip_gt[k]) for k in ks], threshold)
            total += mean * len(ks)
            n_clips += len(ks)
    return total / n_clips if n_clips else None


def _try(fn: Callable[..., float], *args) -> float | None:
    """``fn(*args)``, or ``None`` where the test set lacks a class for it (``ValueError``)."""
    try:
        return fn(*args)
    except ValueError:
        return None
