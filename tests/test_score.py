"""Scoring: per-frame scores, G x G maps and boxes, scores.json files, videos and overlays."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from stmil.cuboids import cuboid_boxes
from stmil.features.extract import ExtractSettings, extract_video
from stmil.features.store import load_features, meta_clip_ranges
from stmil.mil.detector import Detector
from stmil.mil.train import train
from stmil.score import score_features, score_inputs
from tests.conftest import assert_one_line_error, log_lines, ramp_frames, run_cli, write_video
from tests.planted import make_planted

# Ungated: the exact (2e-6) comparisons with direct_maps check the scorer's arithmetic; the
# gate's float32 cosines, rescaled by a narrow novelty range, differ from float64 by ~1e-4
# (tests/mil/test_memory.py checks gated scores).
FAST = dict(iterations=6, hidden=16, mid=4, n_segments=4, device="cpu", progress=False,
            gate="none")
ANOMALOUS = "FightingTest000_x264"


def direct_maps(run: Path, features: np.ndarray, grid1: bool = False,
                motion: np.ndarray | None = None) -> np.ndarray:
    """Expected cuboid scores ``(n_clips, N)``, written out independently of stmil.score: each
    instance divided by its L2 norm, then the scorer's three layers as explicit matmuls with
    the weights read straight from ``model.safetensors`` (ReLU after the first, sigmoid at the
    end), times the memory gate when the file holds one, times ``min(1, motion / q)`` when
    the run's config.yaml says ``motion: gate`` and ``motion`` (the features' record) is given
    (planted features have uniform motion, a gate of 1, and leave it out). A grid-1 model
    scores the mean of a clip's cuboids and fills all N cells with it."""
    w = load_file(str(run / "model.safetensors"))
    x = np.asarray(features, dtype=np.float64)
    if grid1:
        x = x.mean(axis=1, keepdims=True)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    h = np.maximum(x @ w["net.0.weight"].T.astype(np.float64) + w["net.0.bias"], 0.0)
    m = h @ w["net.3.weight"].T.astype(np.float64) + w["net.3.bias"]
    s = 1.0 / (1.0 + np.exp(-(m @ w["net.5.weight"].T.astype(np.float64) + w["net.5.bias"])))
    s = s[..., 0]
    if "gate.bank" in w:  # the memory gate: 1 - the best cosine with the bank, rescaled
        novelty = 1.0 - (x @ w["gate.bank"].T.astype(np.float64)).max(axis=-1)
        lo, hi = w["gate.scale"].astype(np.float64)
        s = s * np.clip((novelty - lo) / (hi - lo), 0.0, 1.0)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    if motion is not None:
        assert cfg["motion"] == "gate"
        s = s * np.minimum(1.0, np.asarray(motion, np.float64) / cfg["motion_scale"])
    return np.broadcast_to(s, features.shape[:2])


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Planted features with I3D's 528 channels, and a briefly trained run on them."""
    base = tmp_path_factory.mktemp("score")
    data, feats, run = base / "data", base / "feats", base / "run"
    truth = make_planted(data, feats, n_train=4, n_test=2, n_clips=6, channels=528)
    train(data, feats, run, **FAST)
    return feats, run, truth


def test_score_features_shapes_tail_and_boxes(planted_run):
    feats, run, _ = planted_run
    detector = Detector.load(run)
    features, meta = load_features(feats, ANOMALOUS)
    meta = dataclasses.replace(meta, n_frames=meta.n_frames + 5)  # 5 tail frames after clips
    ranges = meta_clip_ranges(meta)
    r = score_features(detector, features, meta, ranges)
    n_clips, g = features.shape[0], meta.grid

    maps = np.array(r["clip_maps"])
    assert maps.shape == (n_clips, g, g)
    expect = direct_maps(run, features)
    np.testing.assert_allclose(maps.reshape(n_clips, -1), expect, atol=2e-6)

    scores = np.array(r["frame_scores"])
    assert len(scores) == meta.n_frames == r["n_frames"]
    assert ranges.tolist() == [[16 * k, 16 * k + 16] for k in range(n_clips)]
    for k, (s, e) in enumerate(ranges):
        np.testing.assert_allclose(scores[s:e], expect[k].max(), atol=2e-6)
    assert ranges[-1, 1] == meta.n_frames - 5
    np.testing.assert_allclose(scores[-5:], expect[-1].max(), atol=2e-6)

    boxes = np.array(r["boxes"])
    assert boxes.shape == (meta.n_frames, 4)
    cub = cuboid_boxes(meta.width, meta.height, g)
    for k, (s, e) in enumerate(ranges):
        np.testing.assert_allclose(boxes[s:e], np.repeat(cub[None, expect[k].argmax()], e - s, 0),
                                   atol=0.01)
    np.testing.assert_allclose(boxes[-1], cub[expect[-1].argmax()], atol=0.01)
    assert r["grid"] == g and r["model_grid"] == 7 and r["threshold"] is None
    assert r["clip_ranges"] == ranges.tolist()
    json.dumps(r)  # all plain JSON


def test_threshold_boxes_are_unions_of_hot_cuboids(planted_run):
    feats, run, _ = planted_run
    detector = Detector.load(run)
    features, meta = load_features(feats, ANOMALOUS)
    expect = direct_maps(run, features)
    # Between clip 0's 3rd and 4th highest cuboid: clip 0's box joins exactly 3 cuboids.
    top = np.sort(expect[0])[::-1]
    threshold = float((top[2] + top[3]) / 2)
    r = score_features(detector, features, meta, meta_clip_ranges(meta), threshold)
    cub = cuboid_boxes(meta.width, meta.height, meta.grid)
    hot = cub[expect[0] >= threshold]
    assert len(hot) == 3
    union = [*hot[:, :2].min(0), *hot[:, 2:].max(0)]
    np.testing.assert_allclose(r["boxes"][0], union, atol=0.01)
    assert r["threshold"] == threshold


def test_score_inputs_on_feature_files(planted_run, tmp_path, caplog):
    feats, run, _ = planted_run
    out = tmp_path / "scores"
    written, failed = score_inputs([feats / f"{ANOMALOUS}.npy", tmp_path / "gone.npy"], run,
                                   out, progress=False)
    assert written == [out / f"{ANOMALOUS}.scores.json"]
    assert len(failed) == 1 and "gone" in failed[0]["path"]
    assert any(m.startswith("error: ") and "gone" in m for m in log_lines(caplog))
    got = json.loads(written[0].read_text())
    features, meta = load_features(feats, ANOMALOUS)
    expect = direct_maps(run, features)  # (6 clips, 49)
    assert got["clip_ranges"] == [[0, 16], [16, 32], [32, 48], [48, 64], [64, 80], [80, 96]]
    np.testing.assert_allclose(np.array(got["clip_maps"]).reshape(6, 49), expect, atol=2e-6)
    np.testing.assert_allclose(got["frame_scores"], np.repeat(expect.max(axis=1), 16), atol=2e-6)
    cub = cuboid_boxes(224, 224, 7)
    np.testing.assert_allclose(got["boxes"], np.repeat(cub[expect.argmax(axis=1)], 16, axis=0),
                               atol=0.01)
    assert (got["n_frames"], got["width"], got["height"], got["grid"]) == (96, 224, 224, 7)
    assert got["source"] == f"{ANOMALOUS}.mp4" and got["threshold"] is None
    # A folder of features scores every .npy in it.
    written, failed = score_inputs([feats], run, tmp_path / "all", progress=False)
    assert not failed and len(written) == len(list(feats.glob("*.npy"))) == 6


def test_score_inputs_on_a_video_with_overlay(planted_run, tmp_path, extractor):
    """A real tiny video: extracted in the same call (2 clips), scored, overlay written."""
    _, run, _ = planted_run
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(32, 48, 64, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mkv", frames)
    out = tmp_path / "out"
    written, failed = score_inputs([video], run, out, overlay=True, device="cpu",
                                   progress=False)
    assert not failed
    assert written == [out / "clip.scores.json", out / "clip.overlay.mp4"]
    r = json.loads(written[0].read_text())
    assert r["n_frames"] == 32 and len(r["frame_scores"]) == 32 and len(r["boxes"]) == 32
    assert (r["width"], r["height"]) == (64, 48) and r["source"] == str(video)
    features, meta = extract_video(video, extractor)  # the run's settings: 224, 16, 16, drop
    expect = direct_maps(run, features, motion=meta.motion)
    np.testing.assert_allclose(np.array(r["clip_maps"]).reshape(2, 49), expect, atol=2e-6)
    np.testing.assert_allclose(r["frame_scores"], np.repeat(expect.max(axis=1), 16), atol=2e-6)
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
    for folder in (other, odd):  # distinct stems: one stem twice is refused as a collision
        for ext in (".npy", ".json"):
            (folder / f"{ANOMALOUS}{ext}").rename(folder / f"{folder.name}{ext}")
    bad = [other / "other.npy", odd / "odd.npy"]
    written, failed = score_inputs([*bad, feats / f"{ANOMALOUS}.npy"], run, tmp_path / "out",
                                   progress=False)
    assert written == [tmp_path / "out" / f"{ANOMALOUS}.scores.json"]
    assert [f["path"] for f in failed] == [str(p) for p in bad]
    assert "model takes 528-channel features, these have 32" in failed[0]["error"]
    assert "endpoint='Mixed_4e' features, these have 'Mixed_5c'" in failed[1]["error"]


# --- the run's tail policy -------------------------------------------------------------------


def run_with_meta(base: Path, **meta) -> Path:
    """A briefly trained run like ``planted_run``'s, on features whose metadata (so the run's
    clip settings) are changed by ``meta``."""
    data, feats, run = base / "data", base / "feats", base / "run"
    make_planted(data, feats, n_train=4, n_test=2, n_clips=6, channels=528)
    for meta_path in feats.glob("*.json"):
        meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | meta))
    train(data, feats, run, **FAST)
    return run


@pytest.fixture(scope="module")
def pad_run(tmp_path_factory) -> Path:
    """Like ``planted_run``, but the features (so the run) say ``tail: pad``."""
    return run_with_meta(tmp_path_factory.mktemp("score-pad"), tail="pad")


@pytest.mark.parametrize("tail", ["drop", "pad"])
def test_score_a_video_with_a_tail_follows_the_runs_tail_policy(planted_run, pad_run, tmp_path,
                                                                extractor, tail):
    """40 frames = 2 whole clips of 16 and 8 tail frames. A ``drop`` run scores 2 clips and
    the tail frames take clip 1's score and box; a ``pad`` run scores 3 clips (the third is
    frames 32-39, its last frame repeated) and the tail frames take clip 2's."""
    run = planted_run[1] if tail == "drop" else pad_run
    video = write_video(tmp_path / "odd.mkv", ramp_frames(40, h=48, w=64))
    written, failed = score_inputs([video], run, tmp_path / "out", device="cpu", progress=False)
    assert failed == []
    r = json.loads(written[0].read_text())
    n_clips = {"drop": 2, "pad": 3}[tail]
    ranges = {"drop": [[0, 16], [16, 32]], "pad": [[0, 16], [16, 32], [32, 40]]}[tail]
    assert r["clip_ranges"] == ranges and r["n_frames"] == 40
    features, meta = extract_video(video, extractor, ExtractSettings(tail=tail))
    assert features.shape == (n_clips, 49, 528) and meta.tail == tail
    expect = direct_maps(run, features, motion=meta.motion)
    np.testing.assert_allclose(np.array(r["clip_maps"]).reshape(n_clips, 49), expect, atol=2e-6)
    top = expect.max(axis=1)
    per_frame = {"drop": [0] * 16 + [1] * 24, "pad": [0] * 16 + [1] * 16 + [2] * 8}[tail]
    np.testing.assert_allclose(r["frame_scores"], top[per_frame], atol=2e-6)
    cub = cuboid_boxes(64, 48, 7)
    np.testing.assert_allclose(r["boxes"], cub[expect.argmax(axis=1)][per_frame], atol=0.01)


# --- many videos: the input pipeline of extract ----------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A run on features that say ``size: 64``: scoring a video extracts it at 64x64 (cheap)."""
    return run_with_meta(tmp_path_factory.mktemp("score-small"), size=64)


def three_videos(folder: Path) -> list[Path]:
    """Videos of 1, 2 and 3 clips (16, 32, 48 frames of 32x40), each its own content."""
    folder.mkdir()
    return [write_video(folder / f"v{n}.mkv", ramp_frames(16 * n, h=32, w=40, seed=n))
            for n in (1, 2, 3)]


def test_score_with_workers_equals_serial_bitwise(small_run, tmp_path, capsys, monkeypatch,
                                                  extractor):
    """``stmil score`` over a folder runs extract's input pipeline: 2 decode workers give
    the very bytes the serial path gives, and these are the scores of extract_video's
    features (the model's 64x64 clip settings)."""
    monkeypatch.chdir(tmp_path)
    videos = three_videos(Path("v"))
    files = {}
    for workers in ("0", "2"):
        code, out, err = run_cli(capsys, "score", "v", "--model", small_run, "--out",
                                 f"s{workers}", "--workers", workers, "--device", "cpu",
                                 "--quiet")
        assert code == 0 and err == ""
        assert out.split() == [f"s{workers}/v{n}.scores.json" for n in (1, 2, 3)]
        files[workers] = {p.name: p.read_bytes() for p in Path(f"s{workers}").iterdir()
                          if p.is_file()}  # not .stmil/, the ledger's folder
    assert files["2"] == files["0"] and len(files["0"]) == 3
    for n, video in zip((1, 2, 3), videos):
        r = json.loads(files["0"][f"v{n}.scores.json"])
        features, meta = extract_video(video, extractor, ExtractSettings(size=64))
        assert features.shape == (n, 49, 528) and r["source"] == str(video.resolve())
        np.testing.assert_allclose(np.array(r["clip_maps"]).reshape(n, 49),
                                   direct_maps(small_run, features, motion=meta.motion),
                                   atol=2e-6)


def test_score_a_corrupt_video_among_good_ones_with_workers(small_run, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    three_videos(Path("v"))
    Path("v", "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    code, out, err = run_cli(capsys, "score", "v/v3.mkv", "v/bad.mp4", "v/v1.mkv", "--model",
                             small_run, "--out", "s", "--workers", "2", "--device", "cpu",
                             "--quiet")
    assert code == 1
    assert_one_line_error(err, "v/bad.mp4: not a readable video")
    assert out.split() == ["s/v3.scores.json", "s/v1.scores.json"]  # in the inputs' order
    assert sorted(p.name for p in Path("s").iterdir()) == [".stmil", "v1.scores.json",
                                                           "v3.scores.json"]


def test_score_workers_flag_is_checked(small_run, tmp_path, capsys):
    code, out, err = run_cli(capsys, "score", tmp_path, "--model", small_run, "--out",
                             tmp_path / "s", "--workers", "-1")
    assert code == 1 and out == ""
    assert_one_line_error(err, "workers must be a whole number >= 0, got -1")
