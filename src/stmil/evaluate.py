"""Dataset + model + features -> temporal and spatiotemporal metrics (see docs/metrics.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from stmil import metrics as M
from stmil.atomic import atomic_write
from stmil.cuboids import cuboid_boxes
from stmil.datasets import load_dataset
from stmil.errors import ModelError
from stmil.features import VideoFeatures, load_dataset_features
from stmil.run import load_model
from stmil.score import check_model_features, clip_maps, frame_to_clip

METRIC_KEYS = ("frame_auc", "frame_ap", "false_alarm_rate", "cuboid_auc", "pixel_auroc",
               "pointing_accuracy")


def evaluate(
    data: str | Path,
    features: str | Path,
    run: str | Path,
    *,
    split: str = "test",
    format: str = "auto",
    overlap: float = 0.25,
    threshold: float = 0.5,
    pixel_frames: int = 16,
    skip_missing: bool = False,
    json_out: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """All metrics of ``run`` on ``split``; also written to ``run/metrics.json``.

    ``pixel_frames`` caps the annotated frames per video used for ``pixel_auroc`` (evenly
    spaced). Returns the metrics and settings, plus (not written to JSON) ``"curves"``: the
    frame and cuboid (scores, labels) arrays, and ``"videos"``: ``(VideoFeatures, maps)`` pairs
    with each test video's cuboid maps ``(n_clips, G*G)``.
    """
    model, config = load_model(run)
    records = load_dataset(data, split, format)
    videos = load_dataset_features(records, features, skip_missing, log=log)
    check_model_features(config, videos[0].meta, run)
    per_video = [clip_maps(model, config, v.features) for v in videos]
    result = dict(compute_metrics(videos, per_video, overlap, threshold, pixel_frames))
    result["settings"] = {"data": str(data), "features": str(features), "run": str(run),
                          "split": split, "overlap": overlap, "threshold": threshold,
                          "pixel_frames": pixel_frames, "n_videos": len(videos),
                          "model_grid": config["grid"], "supervision": config["supervision"]}
    text = json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=1)
    atomic_write(Path(run) / "metrics.json", lambda t: t.write_text(text))
    if json_out:
        atomic_write(Path(json_out), lambda t: t.write_text(text))
    result["videos"] = list(zip(videos, per_video))
    return result


def compute_metrics(videos: Sequence[VideoFeatures], maps: Sequence[np.ndarray],
                    overlap: float = 0.25, threshold: float = 0.5,
                    pixel_frames: int = 16) -> dict:
    """The six metrics from per-video cuboid maps ``(n_clips, G*G)``."""
    f_scores, f_labels, normal_scores = [], [], []
    c_scores, c_labels = [], []
    heatmaps, masks, top_boxes, gt_frames = [], [], [], []
    rng = np.random.default_rng(0)  # ties of the top cuboid are broken at random, reproducibly
    for v, m in zip(videos, maps):
        n, ranges = v.meta["n_frames"], v.clip_ranges
        fs = M.frame_scores_from_clips(m.max(axis=1), ranges, n)
        f_scores.append(fs)
        f_labels.append(M.frame_labels(list(v.record.intervals), n))
        if v.record.label == 0:
            normal_scores.append(fs)
        boxes = cuboid_boxes(v.meta["width"], v.meta["height"], v.meta["grid"])
        if v.record.label == 0:
            c_scores.append(m.ravel())
            c_labels.append(np.zeros(m.size, dtype=bool))
            continue
        if not v.record.has_boxes:
            continue  # anomalous video without boxes: temporal metrics only
        gt = v.record.boxes
        for k, (s, e) in enumerate(ranges):
            c_scores.append(m[k])
            c_labels.append(M.cuboid_labels(boxes, [np.array(gt.get(f, []), float).reshape(-1, 4)
                                                    for f in range(s, e)], overlap))
        frames = np.array(sorted(f for f in gt if 0 <= f < n and len(gt[f])), dtype=int)
        clip_of = frame_to_clip(ranges, n)
        tops = M.top_cuboid_boxes(m[clip_of[frames]], boxes, rng)
        top_boxes.append(tops)
        gt_frames += [np.array(gt[f], float).reshape(-1, 4) for f in frames]
        pick = frames[np.linspace(0, len(frames) - 1, min(pixel_frames, len(frames))).astype(int)]
        w, h = v.meta["width"], v.meta["height"]
        heatmaps += [M.frame_heatmap(m[clip_of[f]], w, h) for f in pick]
        masks += [M.box_mask(np.array(gt[f], float).reshape(-1, 4), w, h) for f in pick]
    out = {
        "frame_auc": M.frame_auc(f_scores, f_labels),
        "frame_ap": M.frame_ap(f_scores, f_labels),
        "false_alarm_rate": M.false_alarm_rate(normal_scores, threshold) if normal_scores
        else None,
        "cuboid_auc": _maybe(M.cuboid_auc, c_scores, c_labels),
        "pixel_auroc": _maybe(M.pixel_auroc, heatmaps, masks),
        "pointing_accuracy": M.pointing_accuracy(np.concatenate(top_boxes), gt_frames)
        if top_boxes else None,
    }
    out["curves"] = {"frame": (np.concatenate(f_scores), np.concatenate(f_labels)),
                     "cuboid": (np.concatenate(c_scores), np.concatenate(c_labels))
                     if c_scores else None}
    return out


def _maybe(fn, scores, labels) -> float | None:
    """A metric, or None where the test set has no positives/negatives for it."""
    if not scores or len(np.unique(np.concatenate([np.ravel(x) for x in labels]))) < 2:
        return None
    return fn(scores, labels)


def compare_table(runs: Sequence[str | Path], keys: Sequence[str] = METRIC_KEYS) -> str:
    """One text table across runs, from each ``run/metrics.json``."""
    rows = []
    for run in runs:
        path = Path(run) / "metrics.json"
        if not path.is_file():
            raise ModelError(f"{run}: no metrics.json (run stmil evaluate first)")
        rows.append((str(run), json.loads(path.read_text())))
    return format_table([(name, m) for name, m in rows], keys)


def format_table(rows: Sequence[tuple[str, dict]], keys: Sequence[str] = METRIC_KEYS) -> str:
    """Rows of metric dicts as an aligned text table (``-`` for a missing value)."""
    width = max([len("run")] + [len(n) for n, _ in rows])
    head = "run".ljust(width) + "".join(f"  {k:>17}" for k in keys)
    lines = [head, "-" * len(head)]
    for name, m in rows:
        cells = "".join(f"  {_fmt(m.get(k)):>17}" for k in keys)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:.4f}"
