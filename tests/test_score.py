"""Scoring: per-frame scores, G x G maps and boxes, scores.json files, videos and overlays."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from stmil.cuboids import cuboid_boxes
from stmil.features import load_features, meta_clip_ranges
from stmil.run import load_model
from stmil.score import clip_maps, predicted_boxes, score_features, score_inputs
from stmil.train import train
from tests.conftest import write_video
from tests.planted import make_planted

FAST = dict(iterations=6, hidden=16, mid=4, n_segments=4, device="cpu", progress=False)
ANOMALOUS = "FightingTest000_x264"


def quiet(msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Planted features with I3D's 528 channels, and a briefly trained run on them."""
    base = tmp_path_factory.mktemp("score")
    data, feats, run = base / "data", base / "feats", base / "run"
    truth = make_planted(data, feats, n_train=4, n_test=2, n_clips=6, channels=528)
    train(data, feats, run, log=quiet, **FAST)
    return feats, run, truth


def test_score_features_shapes_tail_and_boxes(planted_run):
    feats, run, _ = planted_run
    model, config = load_model(run)
    features, meta = load_features(feats, ANOMALOUS)
    meta = dict(meta, n_frames=meta["n_frames"] + 5)  # 5 tail frames after the last clip
    ranges = meta_clip_ranges(meta)
    r = score_features(model, config, features, meta, ranges)
    n_clips, g = features.shape[0], meta["grid"]

    maps = np.array(r["clip_maps"])
    assert maps.shape == (n_clips, g, g)
    expect = clip_maps(model, config, features)
    np.testing.assert_allclose(maps.reshape(n_clips, -1), expect, atol=1e-6)

    scores = np.array(r["frame_scores"])
    assert len(scores) == meta["n_frames"] == r["n_frames"]
    for k, (s, e) in enumerate(ranges):
        np.testing.assert_allclose(scores[s:e], expect[k].max(), atol=1e-6)
    assert ranges[-1, 1] == meta["n_frames"] - 5
    np.testing.assert_allclose(scores[-5:], expect[-1].max(), atol=1e-6)

    boxes = np.array(r["boxes"])
    assert boxes.shape == (meta["n_frames"], 4)
    cub = cuboid_boxes(meta["width"], meta["height"], g)
    for k, (s, e) in enumerate(ranges):
        np.testing.assert_allclose(boxes[s:e], np.repeat(cub[None, expect[k].argmax()], e - s, 0),
                                   atol=0.01)
    np.testing.assert_allclose(boxes[-1], cub[expect[-1].argmax()], atol=0.01)
    assert r["grid"] == g and r["model_grid"] == 7 and r["threshold"] is None
    assert r["clip_ranges"] == ranges.tolist()
    json.dumps(r)  # all plain JSON


def test_threshold_boxes_are_unions_of_hot_cuboids(planted_run):
    feats, run, _ = planted_run
    model, config = load_model(run)
    features, meta = load_features(feats, ANOMALOUS)
    expect = clip_maps(model, config, features)
    # Between clip 0's 3rd and 4th highest cuboid: clip 0's box joins exactly 3 cuboids.
    top = np.sort(expect[0])[::-1]
    threshold = float((top[2] + top[3]) / 2)
    r = score_features(model, config, features, meta, meta_clip_ranges(meta), threshold)
    cub = cuboid_boxes(meta["width"], meta["height"], meta["grid"])
    hot = cub[expect[0] >= threshold]
    assert len(hot) == 3
    union = [*hot[:, :2].min(0), *hot[:, 2:].max(0)]
    np.testing.assert_allclose(r["boxes"][0], union, atol=0.01)
    assert r["threshold"] == threshold
    # Row 0: nothing reaches 0.5, so the top cuboid; row 1: cuboids 0 and 2, the left column.
    maps = np.array([[0.1, 0.3, 0.2, 0.0], [0.9, 0.1, 0.95, 0.2]])
    small = cuboid_boxes(4, 4, 2)
    np.testing.assert_array_equal(predicted_boxes(maps, small, 0.5),
                                  [small[1], [0, 0, 2, 4]])  # left column
    np.testing.assert_array_equal(predicted_boxes(maps, small), [small[1], small[2]])


def test_score_inputs_on_feature_files(planted_run, tmp_path):
    feats, run, _ = planted_run
    out = tmp_path / "scores"
    logs: list[str] = []
    written, failed = score_inputs([feats / f"{ANOMALOUS}.npy", tmp_path / "gone.npy"], run,
                                   out, progress=False, log=logs.append)
    assert written == [out / f"{ANOMALOUS}.scores.json"]
    assert len(failed) == 1 and "gone" in failed[0]["path"]
    assert any("gone" in m for m in logs)
    got = json.loads(written[0].read_text())
    model, config = load_model(run)
    features, meta = load_features(feats, ANOMALOUS)
    expect = json.loads(json.dumps(score_features(model, config, features, meta,
                                                  meta_clip_ranges(meta))))
    assert got == expect
    # A folder of features scores every .npy in it.
    written, failed = score_inputs([feats], run, tmp_path / "all", progress=False, log=quiet)
    assert not failed and len(written) == len(list(feats.glob("*.npy"))) == 6


def test_score_inputs_on_a_video_with_overlay(planted_run, tmp_path):
    """A real tiny video: extracted in the same call (2 clips), scored, overlay written."""
    _, run, _ = planted_run
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(32, 48, 64, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mkv", frames)
    out = tmp_path / "out"
    written, failed = score_inputs([video], run, out, overlay=True, device="cpu",
                                   progress=False, log=quiet)
    assert not failed
    assert written == [out / "clip.scores.json", out / "clip.overlay.mp4"]
    r = json.loads(written[0].read_text())
    assert r["n_frames"] == 32 and len(r["frame_scores"]) == 32 and len(r["boxes"]) == 32
    assert np.array(r["clip_maps"]).shape == (2, 7, 7)
    assert (r["width"], r["height"]) == (64, 48) and r["source"] == str(video)
    assert all(0.0 <= s <= 1.0 for s in r["frame_scores"])
    with av.open(str(written[1])) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == 32


def test_feature_files_of_other_settings_fail_alone(planted_run, tmp_path):
    """Features the model was not trained on are refused by name; the rest are still scored."""
    feats, run, _ = planted_run
    other = tmp_path / "other"
    make_planted(tmp_path / "d", other, n_train=2, n_test=2, n_clips=3, channels=32)
    odd = tmp_path / "odd"
    make_planted(tmp_path / "d2", odd, n_train=2, n_test=2, n_clips=3, channels=528)
    meta = json.loads((odd / f"{ANOMALOUS}.json").read_text())
    (odd / f"{ANOMALOUS}.json").write_text(json.dumps(meta | {"endpoint": "Mixed_5c"}))
    bad = [other / f"{ANOMALOUS}.npy", odd / f"{ANOMALOUS}.npy"]
    written, failed = score_inputs([*bad, feats / f"{ANOMALOUS}.npy"], run, tmp_path / "out",
                                   progress=False, log=quiet)
    assert written == [tmp_path / "out" / f"{ANOMALOUS}.scores.json"]
    assert [f["path"] for f in failed] == [str(p) for p in bad]
    assert "model takes 528-channel features, these have 32" in failed[0]["error"]
    assert "endpoint='Mixed_4e' features, these have 'Mixed_5c'" in failed[1]["error"]
