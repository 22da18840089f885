"""Evaluation metrics as pure functions: numpy arrays in, a number (or an array) out.

Definitions, tie handling and edge cases are written out in ``docs/metrics.md``. Conventions:
boxes are ``(x1, y1, x2, y2)`` float pixels in the original frame with x2/y2 exclusive; a pixel
``(row y, column x)`` belongs to a box when its centre ``(x + 0.5, y + 0.5)`` lies inside it;
frames are 0-based and clip/interval ranges are half-open ``[start, end)``.
The geometry the metrics are computed on (frame labels and frame scores from clips in
:mod:`stmil.timeline`, cuboid labels and box overlaps in :mod:`stmil.cuboids`) lives below them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from stmil.cuboids import as_boxes, intersection_areas

ArrayOrList = np.ndarray | Sequence


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _flat(x: ArrayOrList, dtype: type) -> np.ndarray:
    """A 1-D array from an array or a sequence of per-video arrays (concatenated in order)."""
    if isinstance(x, np.ndarray):
        return x.astype(dtype, copy=False).ravel()
    parts = [np.asarray(p, dtype=dtype).ravel() for p in x]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _scores_labels(scores: ArrayOrList, labels: ArrayOrList) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(S,)`` float scores and ``(S,)`` bool labels with both classes present."""
    s = _flat(scores, np.float64)
    raw = _flat(labels, np.float64)
    if s.shape != raw.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {raw.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if not np.all((raw == 0) | (raw == 1)):
        raise ValueError("labels must be 0/1 or boolean")
    y = raw.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        kind = "normal (0)" if n_pos == 0 else "anomalous (1)"
        raise ValueError(
            f"only one class is present: all {y.size} labels are {kind}; "
            "ROC AUC / AP need both anomalous and normal samples"
        )
    return s, y


# ---------------------------------------------------------------------------------------------
# Temporal (frame-level) metrics
# ---------------------------------------------------------------------------------------------


def frame_auc(scores: ArrayOrList, labels: ArrayOrList) -> float:
    """ROC AUC over all test frames concatenated (Sultani et al. protocol).

    ``scores``/``labels``: ``(F,)`` arrays, or sequences of per-video ``(F_v,)`` arrays that are
    concatenated. Raises ``ValueError`` if only one class is present.
    """
    s, y = _scores_labels(scores, labels)
    return float(roc_auc_score(y, s))


def frame_ap(scores: ArrayOrList, labels: ArrayOrList) -> float:
    """Average precision (sklearn, no interpolation) over all test frames concatenated.

    Same inputs and errors as :func:`frame_auc`.
    """
    s, y = _scores_labels(scores, labels)
    return float(average_precision_score(y, s))


def false_alarm_rate(scores: ArrayOrList, threshold: float = 0.5) -> float:
    """Fraction of frames of normal videos with ``score >= threshold``.

    ``scores``: ``(F,)`` frame scores of normal videos only (or a sequence of per-video arrays).
    """
    s = _flat(scores, np.float64)
    if s.size == 0:
        raise ValueError("false_alarm_rate needs at least one frame of a normal video")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return float(np.mean(s >= threshold))


# ---------------------------------------------------------------------------------------------
# Spatial metrics
# ---------------------------------------------------------------------------------------------


def cuboid_auc(scores: ArrayOrList, labels: ArrayOrList) -> float:
    """ROC AUC over cuboid instances: ``scores``/``labels`` of shape ``(S,)``."""
    s, y = _scores_labels(scores, labels)
    return float(roc_auc_score(y, s))


def box_mask(boxes: ArrayOrList, width: int, height: int) -> np.ndarray:
    """``(height, width)`` bool: pixels whose centre lies inside any of the ``(K, 4)`` boxes."""
    b = as_boxes(boxes)
    cx = np.arange(width) + 0.5
    cy = np.arange(height) + 0.5
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in b:
        mask |= ((cy >= y1) & (cy < y2))[:, None] & ((cx >= x1) & (cx < x2))[None, :]
    return mask


def pixel_auroc(
    heatmaps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    max_pixels: int = 2_000_000,
    seed: int = 0,
) -> float:
    """ROC AUC of pixel scores against box masks over annotated frames.

    ``heatmaps``: one ``(H, W)`` float map per frame; ``masks``: matching ``(H, W)`` bool masks.
    If there are more than ``max_pixels`` pixels in total, a uniform sample of exactly
    ``max_pixels`` (without replacement, ``numpy.random.default_rng(seed)``) is used.
    """
    if len(heatmaps) != len(masks) or len(heatmaps) == 0:
        raise ValueError(
            f"need equal, non-zero numbers of heatmaps and masks: {len(heatmaps)} vs {len(masks)}"
        )
    for i, (h, m) in enumerate(zip(heatmaps, masks, strict=True)):
        if np.shape(h) != np.shape(m):
            raise ValueError(f"frame {i}: heatmap {np.shape(h)} and mask {np.shape(m)} differ")
    sizes = np.array([np.size(h) for h in heatmaps], dtype=np.int64)
    total = int(sizes.sum())
    if total <= max_pixels:
        return cuboid_auc(_flat(heatmaps, np.float64), _flat(masks, bool))
    rng = np.random.default_rng(seed)
    # shuffle=False lets numpy draw a small sample without permuting the whole population.
    idx = np.sort(rng.choice(total, size=max_pixels, replace=False, shuffle=False))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    cut = np.searchsorted(idx, bounds)  # idx[cut[f]:cut[f + 1]] fall in frame f
    s = np.empty(max_pixels)
    y = np.empty(max_pixels, dtype=bool)
    for f in range(len(heatmaps)):
        lo, hi = cut[f], cut[f + 1]
        if lo < hi:
            local = idx[lo:hi] - bounds[f]
            s[lo:hi] = np.asarray(heatmaps[f], dtype=np.float64).ravel()[local]
            y[lo:hi] = np.asarray(masks[f], dtype=bool).ravel()[local]
    return cuboid_auc(s, y)


def top_cuboid_boxes(cuboid_scores: np.ndarray, cuboid_boxes: np.ndarray,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """``(F, 4)`` box of each frame's top-scoring cuboid.

    ``cuboid_scores``: ``(F, G*G)`` row-major; ``cuboid_boxes``: ``(G*G, 4)``. Ties go to the
    first cuboid in row-major order (``argmax``), or, with ``rng``, to a uniformly random one
    of the tied cuboids: a constant map (the grid-1 baseline) then points at chance level
    instead of always at the top-left cell.
    """
    s = np.asarray(cuboid_scores, dtype=np.float64)
    b = as_boxes(cuboid_boxes)
    if s.ndim != 2 or s.shape[1] != len(b):
        raise ValueError(f"cuboid_scores {s.shape} do not match {len(b)} cuboid boxes")
    if rng is None:
        return b[np.argmax(s, axis=1)]
    tied = s == s.max(axis=1, keepdims=True)
    pick = [rng.choice(np.flatnonzero(row)) for row in tied]
    return b[np.array(pick, dtype=int)]


def pointing_accuracy(top_boxes: np.ndarray, gt_boxes: Sequence[ArrayOrList]) -> float:
    """Fraction of anomalous GT frames whose top cuboid box overlaps any GT box of that frame.

    ``top_boxes``: ``(F, 4)`` (see :func:`top_cuboid_boxes`); ``gt_boxes``: one ``(K_i, 4)``
    array per frame. Frames with ``K_i = 0`` are skipped; a hit needs intersection area > 0.
    """
    top = as_boxes(top_boxes)
    if len(top) != len(gt_boxes):
        raise ValueError(f"{len(top)} top boxes but {len(gt_boxes)} frames of GT boxes")
    hits, n = 0, 0
    for box, gt in zip(top, gt_boxes, strict=True):
        g = as_boxes(gt)
        if len(g):
            n += 1
            hits += bool((intersection_areas(box[None], g) > 0).any())
    if n == 0:
        raise ValueError("pointing_accuracy needs at least one frame with a GT box")
    return hits / n


# ---------------------------------------------------------------------------------------------
# Metrics that papers report (issue 12): comparable with published tables
# ---------------------------------------------------------------------------------------------


def frame_auc_anomalous(scores: Sequence[ArrayOrList], labels: Sequence[ArrayOrList],
                        video_labels: ArrayOrList) -> float:
    """Frame ROC AUC over the anomalous videos only (``video_labels == 1``).

    ``scores``/``labels``: one ``(F_v,)`` array per video; ``video_labels``: ``(V,)`` 0/1.
    Normal videos are left out, so the negatives are the normal frames of anomalous videos.
    """
    vl = np.asarray(video_labels).ravel()
    if len(vl) != len(scores) or len(vl) != len(labels):
        raise ValueError(f"{len(scores)} score arrays, {len(labels)} label arrays and "
                         f"{len(vl)} video labels differ")
    keep = np.flatnonzero(vl == 1)
    return frame_auc([scores[i] for i in keep], [labels[i] for i in keep])


def frame_ap_trapezoid(scores: ArrayOrList, labels: ArrayOrList) -> float:
    """AP as the trapezoid area under the precision-recall curve: ``auc(recall, precision)``.

    Several published evaluation scripts compute AP this way (scikit-learn's
    ``precision_recall_curve`` then ``auc``); it interpolates linearly between operating points
    and so differs from :func:`frame_ap` (scikit-learn's step-wise ``average_precision``).
    """
    s, y = _scores_labels(scores, labels)
    precision, recall, _ = precision_recall_curve(y, s)
    return float(auc(recall, precision))


def gated_cuboid_scores(cuboid_scores: np.ndarray, frame_scores: ArrayOrList) -> np.ndarray:
    """Patch scores ``(F, N)``: each cuboid score ``(F, N)`` times its frame's score ``(F,)``.

    A cuboid scores high only when its frame does too (the frame score gates the map).
    """
    c = np.asarray(cuboid_scores, dtype=np.float64)
    f = np.asarray(frame_scores, dtype=np.float64).ravel()
    if c.ndim != 2 or c.shape[0] != f.size:
        raise ValueError(f"cuboid_scores {c.shape} do not match {f.size} frame scores")
    return c * f[:, None]


def _weighted(scores: ArrayOrList, labels: ArrayOrList, weights: ArrayOrList | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    s, y = _scores_labels(scores, labels)
    if weights is None:
        return s, y, None
    w = _flat(weights, np.float64)
    if w.shape != s.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite, >= 0 and as many as the scores")
    if not (w[y].sum() > 0 and w[~y].sum() > 0):
        raise ValueError("weights leave only one class; patch AUC / AP need both")
    return s, y, w


def patch_auc(scores: ArrayOrList, labels: ArrayOrList,
              weights: ArrayOrList | None = None) -> float:
    """PAUC: ROC AUC over patches (every cuboid of every test frame), flattened.

    ``scores``: gated patch scores (:func:`gated_cuboid_scores`), ``labels``: 0/1, ``weights``:
    optional frame counts, so that one row can stand for the identical patches of the frames of
    one clip (a weight of ``k`` is the same as repeating the sample ``k`` times).
    """
    s, y, w = _weighted(scores, labels, weights)
    return float(roc_auc_score(y, s, sample_weight=w))


def patch_ap(scores: ArrayOrList, labels: ArrayOrList,
             weights: ArrayOrList | None = None) -> float:
    """PAP: scikit-learn average precision over patches; same inputs as :func:`patch_auc`."""
    s, y, w = _weighted(scores, labels, weights)
    return float(average_precision_score(y, s, sample_weight=w))


def box_iou(boxes_a: ArrayOrList, boxes_b: ArrayOrList) -> np.ndarray:
    """``(N, M)`` intersection over union of ``(N, 4)`` and ``(M, 4)`` boxes (0 if both empty)."""
    a, b = as_boxes(boxes_a), as_boxes(boxes_b)
    inter = intersection_areas(a, b)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def top_region_boxes(cuboid_scores: np.ndarray, cuboid_boxes: np.ndarray) -> np.ndarray:
    """``(F, 4)`` predicted box of each frame: the box around every cuboid tied for the top.

    ``cuboid_scores``: ``(F, G*G)``; ``cuboid_boxes``: ``(G*G, 4)``. With one top cuboid this
    is its box; a constant map (the grid-1 baseline) gives the whole frame, the honest box of a
    model that cannot say where.
    """
    s = np.asarray(cuboid_scores, dtype=np.float64)
    b = as_boxes(cuboid_boxes)
    if s.ndim != 2 or s.shape[1] != len(b):
        raise ValueError(f"cuboid_scores {s.shape} do not match {len(b)} cuboid boxes")
    tied = s == s.max(axis=1, keepdims=True)  # (F, N)
    lo = np.where(tied[:, :, None], b[None, :, :2], np.inf).min(axis=1)
    hi = np.where(tied[:, :, None], b[None, :, 2:], -np.inf).max(axis=1)
    return np.concatenate([lo, hi], axis=1)


def tiou(pred_boxes: ArrayOrList, frame_scores: ArrayOrList, gt_boxes: Sequence[ArrayOrList],
         threshold: float = 0.5) -> float:
    """TIoU (Liu and Ma, ACM MM 2019): mean over GT-box frames of ``IoU * [score >= threshold]``.

    ``pred_boxes``: ``(F, 4)`` predicted box of each frame; ``frame_scores``: ``(F,)``;
    ``gt_boxes``: one ``(K_i, 4)`` array per frame. Frames with ``K_i = 0`` are skipped; with
    several GT boxes the best IoU counts. A frame below the threshold counts as 0.
    """
    p = as_boxes(pred_boxes)
    s = _flat(frame_scores, np.float64)
    if not (len(p) == s.size == len(gt_boxes)):
        raise ValueError(f"{len(p)} boxes, {s.size} scores and {len(gt_boxes)} GT frames differ")
    total, n = 0.0, 0
    for box, score, gt in zip(p, s, gt_boxes, strict=True):
        g = as_boxes(gt)
        if len(g):
            n += 1
            if score >= threshold:
                total += float(box_iou(box[None], g).max())
    if n == 0:
        raise ValueError("tiou needs at least one frame with a GT box")
    return total / n


def localization_false_positives(cuboid_scores: np.ndarray, cuboid_boxes: np.ndarray,
                                 gt_boxes_per_clip: Sequence[ArrayOrList],
                                 threshold: float = 0.5) -> float:
    """Mean number, per anomalous clip, of cuboids ``>= threshold`` that touch no GT box.

    ``cuboid_scores``: ``(K, N)`` maps of the K anomalous clips (those with a GT box);
    ``cuboid_boxes``: ``(N, 4)``; ``gt_boxes_per_clip``: one ``(M_k, 4)`` array per clip, every
    GT box of any of its frames. A cuboid touches a box when their intersection area is > 0.
    """
    s = np.asarray(cuboid_scores, dtype=np.float64)
    b = as_boxes(cuboid_boxes)
    if s.ndim != 2 or s.shape[1] != len(b) or s.shape[0] != len(gt_boxes_per_clip):
        raise ValueError(f"cuboid_scores {s.shape} do not match {len(b)} cuboid boxes and "
                         f"{len(gt_boxes_per_clip)} clips")
    if s.shape[0] == 0:
        raise ValueError("localization_false_positives needs at least one anomalous clip")
    counts = [int(((row >= threshold)
                   & ~(intersection_areas(b, as_boxes(g)) > 0).any(axis=1)).sum())
              for row, g in zip(s, gt_boxes_per_clip, strict=True)]
    return float(np.mean(counts))
