"""The metrics papers report: hand-computed cases, scikit-learn, and the evaluate wiring."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from stmil.datasets import VideoRecord
from stmil.evaluation import metrics as M
from stmil.evaluation.evaluate import METRIC_KEYS, compute_metrics, format_table
from stmil.evaluation.report import COLUMNS
from stmil.features.store import FeatureMeta, VideoFeatures

PAPER = ("frame_auc_anomalous", "frame_ap_trapezoid", "patch_auc", "patch_ap", "tiou",
         "loc_false_positives")


def test_auc_on_anomalous_videos_only_leaves_normal_videos_out():
    scores = [np.array([0.9, 0.2, 0.8]), np.array([0.95, 0.1])]
    labels = [np.array([1, 0, 1]), np.array([0, 0])]
    # Anomalous video alone: both positives beat its one negative.
    assert M.frame_auc_anomalous(scores, labels, [1, 0]) == 1.0
    # With the normal video, 0.95 beats both positives: 4 of 6 pairs are right.
    assert M.frame_auc(scores, labels) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="only one class"):
        M.frame_auc_anomalous(scores, labels, [0, 0])
    with pytest.raises(ValueError, match="differ"):
        M.frame_auc_anomalous(scores, labels, [1])


def test_ap_both_ways_differ_as_computed_by_hand():
    s, y = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    # Step-wise: recall 0.5 at precision 1, recall 1 at precision 2/3.
    assert M.frame_ap(np.array(s), np.array(y)) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Trapezoids through (recall, precision) = (0, 1), (.5, 1), (.5, .5), (1, 2/3), (1, .5).
    assert M.frame_ap_trapezoid(np.array(s), np.array(y)) == pytest.approx(
        0.5 * 1 + 0.5 * (0.5 + 2 / 3) / 2)


def test_patch_scores_are_gated_and_weights_repeat_samples():
    gated = M.gated_cuboid_scores(np.array([[0.8, 0.2], [0.6, 0.4]]), [0.5, 1.0])
    np.testing.assert_allclose(gated, [[0.4, 0.1], [0.6, 0.4]])
    # Positive 0.4 beats 0.1, loses to 0.6, ties 0.4: (1 + 0.5) / 3.
    assert M.patch_auc(gated, np.array([[1, 0], [0, 0]])) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    s, y = rng.uniform(size=30).round(1), rng.integers(0, 2, 30)
    w = rng.integers(1, 4, 30)
    expanded_s, expanded_y = np.repeat(s, w), np.repeat(y, w)
    assert M.patch_auc(s, y, w) == pytest.approx(roc_auc_score(expanded_y, expanded_s))
    assert M.patch_ap(s, y, w) == pytest.approx(M.frame_ap(expanded_s, expanded_y))
    with pytest.raises(ValueError, match="weights"):
        M.patch_auc(s, y, -w)


def test_iou_and_tiou_by_hand():
    assert M.box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    pred = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 15, 10]]
    scores = [0.9, 0.3, 0.9, 0.5]
    gt = [[[5, 0, 15, 10]], [[0, 0, 10, 10]], [], [[5, 0, 15, 10], [50, 50, 60, 60]]]
    # Frame 1 is below the threshold (counts 0), frame 2 has no box (skipped), frame 3 at
    # the threshold counts with its best GT box.
    assert M.tiou(pred, scores, gt, threshold=0.5) == pytest.approx((1 / 3 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="at least one frame"):
        M.tiou(pred[:1], scores[:1], [[]])


def test_predicted_box_spans_the_cuboids_tied_for_the_top():
    boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20]], float)
    scores = np.array([[0.1, 0.9, 0.2, 0.3], [0.5, 0.5, 0.5, 0.5], [0.7, 0.1, 0.1, 0.7]])
    np.testing.assert_array_equal(M.top_region_boxes(scores, boxes),
                                  [[10, 0, 20, 10], [0, 0, 20, 20], [0, 0, 20, 20]])


def test_localization_false_positives_by_hand():
    boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20]], float)
    scores = np.array([[0.9, 0.6, 0.2, 0.5], [0.7, 0.9, 0.1, 0.1]])
    gt = [np.array([[2, 2, 8, 8]]), np.array([[10, 0, 20, 10]])]  # clip 1's GT only edges box 0
    # Clip 0: cuboids 1 and 3 are >= 0.5 away from the box; clip 1: cuboid 0 (edge only).
    assert M.localization_false_positives(scores, boxes, gt, 0.5) == pytest.approx(1.5)


def _video(video_id: str, label: int, intervals=(), boxes=None) -> VideoFeatures:
    meta = FeatureMeta(n_clips=2, clip_len=4, stride=4, fps=30.0, source_fps=30.0, n_frames=8,
                       width=20, height=20, grid=2, size=224, endpoint="Mixed_4e",
                       tail="drop", channels=8)
    rec = VideoRecord(video_id, label, intervals=tuple(intervals), boxes=boxes or {})
    return VideoFeatures(rec, np.zeros((2, 4, 8), np.float16), meta)


def test_evaluate_carries_the_paper_metrics_computed_by_hand():
    """2x2 grid on 20x20 frames, clips of 4 frames. The anomalous video's box covers 36% of
    cuboid 0 on frames 0-3; its map puts cuboid 1 on top."""
    a = _video("a", 1, [(0, 4)], {f: [(2.0, 2.0, 8.0, 8.0)] for f in range(4)})
    n = _video("n", 0)
    maps = [np.array([[0.6, 0.9, 0.2, 0.5], [0.3, 0.1, 0.2, 0.1]]),
            np.array([[0.4, 0.2, 0.1, 0.3], [0.5, 0.2, 0.2, 0.2]])]
    r = compute_metrics([a, n], maps)
    assert r["frame_auc_anomalous"] == 1.0  # 0.9 on frames 0-3, 0.3 on frames 4-7
    # Patches: 4 positives gated 0.9 * 0.6 = 0.54; of 60 negatives only 4 (0.9 * 0.9) beat them.
    assert r["patch_auc"] == pytest.approx(56 / 60)
    assert r["patch_ap"] == pytest.approx(4 / 8)
    assert r["tiou"] == 0.0  # the top cuboid (1) does not meet the box
    assert r["loc_false_positives"] == 2.0  # clip 0: cuboids 1 (0.9) and 3 (0.5)
    s, y = r["curves"]["frame"]
    assert r["frame_ap_trapezoid"] == pytest.approx(M.frame_ap_trapezoid(s, y))


def test_paper_metrics_are_none_without_boxes_and_listed_once():
    r = compute_metrics([_video("a", 1, [(0, 4)]), _video("n", 0)],
                        [np.full((2, 4), 0.5), np.full((2, 4), 0.2)])
    assert r["tiou"] is None and r["loc_false_positives"] is None
    assert r["patch_auc"] is None  # only normal patches: one class
    assert set(PAPER) <= set(METRIC_KEYS) and set(PAPER) <= set(COLUMNS)
    assert all(k in format_table([("x", r)]) for k in PAPER)


def test_results_recorded_before_the_paper_metrics_still_read(tmp_path):
    import json

    from stmil.errors import ModelError
    from stmil.evaluation.evaluate import compare_table, read_metrics

    old = {"frame_auc": 0.5, "frame_ap": 0.5, "false_alarm_rate": 0.1, "cuboid_auc": None,
           "pixel_auroc": None, "pointing_accuracy": None,
           "settings": {"split": "test", "data": "/d"}}
    (tmp_path / "metrics.json").write_text(json.dumps({"version": 2,
                                                       "results": {"test": {"/d": old}}}))
    assert read_metrics(tmp_path)["test"]["/d"] == old
    head, _, row = compare_table([tmp_path]).splitlines()
    cells = dict(zip(head.split(), row.split(), strict=True))
    # Recorded before thresholds had a source: at settings' threshold, absent here: 0.5.
    shown = {k: f"{k}@0.5(default)" if k in ("tiou", "loc_false_positives") else k
             for k in PAPER}
    assert [cells[shown[k]] for k in PAPER] == ["-"] * 6 and cells["frame_auc"] == "0.5000"
    assert cells["false_alarm_rate@0.5(default)"] == "0.1000"
    # A count may exceed 1; a negative one, or a fraction above 1, is refused.
    (tmp_path / "metrics.json").write_text(json.dumps(dict(old, loc_false_positives=12.5)))
    assert read_metrics(tmp_path)["test"]["/d"]["loc_false_positives"] == 12.5
    for key, bad, what in (("loc_false_positives", -1, "a number >= 0"),
                           ("patch_auc", 1.5, "a number in [0, 1]")):
        (tmp_path / "metrics.json").write_text(json.dumps(dict(old, **{key: bad})))
        with pytest.raises(ModelError, match=rf"{key} must be {re.escape(what)} or null"):
            read_metrics(tmp_path)
