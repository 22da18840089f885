"""Evaluation: metrics.json, the compare table, refusals, and a hand-computed case."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from stmil.datasets import VideoRecord
from stmil.errors import ConfigError, ModelError
from stmil.evaluation.evaluate import (
    METRIC_KEYS,
    UNBOUNDED_METRIC_KEYS,
    compare_table,
    compute_metrics,
    evaluate,
    read_metrics,
)
from stmil.features.store import FeatureMeta, VideoFeatures, load_features
from stmil.mil.detector import Detector
from stmil.mil.train import train
from tests.planted import FAST_TRAIN, planted_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A planted dataset (8 train + 6 test videos) and a briefly trained run on it."""
    return planted_run(tmp_path_factory.mktemp("eval"), n_train=8, n_test=6, n_clips=8)


def test_evaluate_writes_metrics_json_and_json_out(tiny, tmp_path):
    data, feats, run = tiny
    out = tmp_path / "sub" / "m.json"
    out.parent.mkdir()
    result = evaluate(data, feats, run, json_out=out)
    written = json.loads(out.read_text())
    stored = json.loads((run / "metrics.json").read_text())
    assert stored["version"] == 2
    assert stored["results"]["test"][str(data.resolve())] == written
    assert read_metrics(run)["test"][str(data.resolve())] == written
    assert set(METRIC_KEYS) <= set(written)
    for key in METRIC_KEYS:
        hi = float("inf") if key in UNBOUNDED_METRIC_KEYS else 1.0
        assert isinstance(written[key], float) and 0.0 <= written[key] <= hi, key
        assert written[key] == pytest.approx(result.result[key])
    s = written["settings"]
    assert s["split"] == "test" and s["n_videos"] == 6 and s["model_grid"] == 7
    assert s["supervision"] == "weak" and s["overlap"] == 0.25 and s["run"] == str(run)
    assert "curves" not in written and "videos" not in written
    assert result.result == written
    # The in-memory result adds per-video maps and the curves behind the AUCs.
    assert len(result.videos) == 6
    v, maps = result.videos[0]
    assert maps.shape == (8, 49)
    scores, labels = result.curves["frame"]
    assert roc_auc_score(labels, scores) == pytest.approx(written["frame_auc"])


def test_compare_table_has_one_row_per_run(tiny, tmp_path):
    data, feats, run = tiny
    other = tmp_path / "g1"
    train(data, feats, other, grid=1, **FAST_TRAIN)
    evaluate(data, feats, run)
    evaluate(data, feats, other)
    lines = compare_table([run, other]).splitlines()
    assert len(lines) == 4  # header, rule, two runs
    assert all(k in lines[0] for k in METRIC_KEYS)
    assert lines[2].startswith(str(run)) and lines[3].startswith(str(other))
    g1 = read_metrics(other)["test"][str(data.resolve())]
    assert f"{g1['frame_auc']:.4f}" in lines[3]
    assert lines[0].split()[:3] == ["run", "split", "data"]
    assert lines[3].split()[1:3] == ["test", str(data)]
    with pytest.raises(ModelError, match="no metrics.json"):
        compare_table([run, tmp_path / "nothing"])


@pytest.mark.parametrize("key,value,match", [
    ("endpoint", "Mixed_5c", "trained on endpoint='Mixed_4e' features, these have 'Mixed_5c'"),
    ("stride", 8, "stride=16"),
])
def test_model_trained_on_other_features_is_refused(tiny, tmp_path, key, value, match):
    data, feats, run = tiny
    other = tmp_path / "feats"
    shutil.copytree(feats, other)
    for meta_path in other.glob("*.json"):
        meta = json.loads(meta_path.read_text())
        meta[key] = value
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        evaluate(data, other, run)


def test_model_trained_on_another_grid_is_refused(tiny):
    _, feats, run = tiny
    detector = Detector.load(run)
    _, meta = load_features(feats, "FightingTest000_x264")
    with pytest.raises(ConfigError, match="^here: model was trained on grid 7 features, these "
                       "have grid 4$"):
        detector.check_features(dataclasses.replace(meta, grid=4, motion=None), "here")


def test_evaluate_without_a_model_is_refused(tiny, tmp_path):
    data, feats, _ = tiny
    with pytest.raises(ModelError, match="no model.safetensors"):
        evaluate(data, feats, tmp_path)


# --- a case small enough to compute by hand ----------------------------------------------------
# Grid 2 on a 4x4 frame: each cuboid is a 2x2 pixel box. Clips of 2 frames, stride 2, 5 frames:
# clips [0, 2) and [2, 4); frame 4 is the tail and takes clip 1's score and map.
# Video A is normal. Video B is anomalous on frames 1-4, with its box on the bottom-right cuboid
# (index 3) on each of those frames.

META = FeatureMeta(fps=30.0, source_fps=30.0, n_frames=5, width=4, height=4, grid=2,
                   clip_len=2, stride=2, n_clips=2, size=224, endpoint="Mixed_4e",
                   tail="drop", channels=8)
MAP_A = np.array([[0.1, 0.2, 0.3, 0.2], [0.4, 0.1, 0.1, 0.1]])  # frames .3 .3 .4 .4 .4
MAP_B = np.array([[0.2, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.35]])  # frames .2 .2 .35 .35 .35


def _hand_case() -> dict:
    box = (2.0, 2.0, 4.0, 4.0)
    a = VideoRecord("A", 0)
    b = VideoRecord("B", 1, intervals=((1, 5),), boxes={f: [box] for f in range(1, 5)})
    feats = np.zeros((2, 4, 8), np.float16)
    videos = [VideoFeatures(a, feats, META), VideoFeatures(b, feats, META)]
    return compute_metrics(videos, [MAP_A, MAP_B], overlap=0.25, threshold=0.35)


def test_compute_metrics_hand_case():
    m = _hand_case()
    # Frames: negatives A .3 .3 .4 .4 .4 and B frame 0 .2; positives B .2 .35 .35 .35.
    # Each .35 beats 3 of 6 negatives; the .2 ties one: AUC = (3 * 3 + 0.5) / (4 * 6).
    assert m["frame_auc"] == pytest.approx(9.5 / 24)
    # AP: at .35 recall 3/4 with precision 3/6; at .2 recall 1 with precision 4/10.
    assert m["frame_ap"] == pytest.approx(0.75 * 0.5 + 0.25 * 0.4)
    # Normal frames >= 0.35: .4 .4 .4 of 5.
    assert m["false_alarm_rate"] == pytest.approx(3 / 5)
    # Cuboids: positives are B's cuboid 3 in both clips (.1, .35), the 14 others negative.
    # .35 beats 13 (all but A's .4); .1 ties 7 of them: (13 + 3.5) / (2 * 14).
    assert m["cuboid_auc"] == pytest.approx(16.5 / 28)
    # Pointing: frame 1 points at cuboid 0 (box (0,0,2,2) only touches the GT corner: a miss);
    # frames 2, 3, 4 point at cuboid 3: hits.
    assert m["pointing_accuracy"] == pytest.approx(3 / 4)
    # Pixels of the 4 GT frames, 4 per cuboid: positives 4 @ .1 and 12 @ .35; negatives
    # 20 @ .1, 16 @ .2, 12 @ .3. AUC = (12 * 48 + 4 * 20 / 2) / (16 * 48).
    assert m["pixel_auroc"] == pytest.approx(616 / 768)


def test_compute_metrics_hand_case_agrees_with_sklearn():
    m = _hand_case()
    scores, labels = m["curves"]["frame"]
    np.testing.assert_allclose(scores, [.3, .3, .4, .4, .4, .2, .2, .35, .35, .35])
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    assert m["frame_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["frame_ap"] == pytest.approx(average_precision_score(labels, scores))
    c_scores, c_labels = m["curves"]["cuboid"]
    assert c_labels.sum() == 2 and len(c_labels) == 16
    assert m["cuboid_auc"] == pytest.approx(roc_auc_score(c_labels, c_scores))


def test_compute_metrics_without_boxes_gives_temporal_metrics_only():
    a = VideoRecord("A", 0)
    b = VideoRecord("B", 1, intervals=((1, 5),))
    feats = np.zeros((2, 4, 8), np.float16)
    videos = [VideoFeatures(a, feats, META), VideoFeatures(b, feats, META)]
    m = compute_metrics(videos, [MAP_A, MAP_B])
    assert m["frame_auc"] == pytest.approx(9.5 / 24)
    assert m["pointing_accuracy"] is None and m["pixel_auroc"] is None
    assert m["cuboid_auc"] is None  # only negatives (normal cuboids): no AUC
