"""Issue 13's motion prior: extraction stores each cuboid's motion energy (checked against a
numpy computation of the definition), both extraction paths agree, a malformed record is
refused, and a run with the motion gate scores exactly ``ungated * min(1, m / q)``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from stmil.features.extract import ExtractSettings, extract_many, extract_video
from stmil.features.pipeline_config import PipelineConfig
from stmil.features.resize import resize_frames
from stmil.features.store import FeatureError, load_features, read_feature_meta
from tests.conftest import assert_one_line_error, run_cli, write_video
from tests.planted import make_planted

SMALL = ExtractSettings(size=64)


def _moving_square(n: int = 32, h: int = 48, w: int = 64) -> np.ndarray:
    """Grey frames, static but for a white 6x6 square sliding right in the top-left corner."""
    frames = np.full((n, h, w, 3), 96, np.uint8)
    for t in range(n):
        x = t % 4
        frames[t, 1:7, x:x + 6] = 255
    return frames


def _by_hand(frames: np.ndarray, size: int, grid: int, clip_len: int = 16) -> np.ndarray:
    """The definition in numpy: mean |difference of consecutive frames| per cell, per clip."""
    x = resize_frames(frames, size).numpy()  # (N, 3, S, S) in [-1, 1], the model's input
    cell = size // grid
    out = []
    for s in range(0, len(frames) - clip_len + 1, clip_len):
        d = np.abs(np.diff(x[s:s + clip_len], axis=0)).mean(axis=(0, 1))  # (S, S)
        out.append(d[:cell * grid, :cell * grid].reshape(grid, cell, grid, cell)
                   .mean(axis=(1, 3)).ravel())
    return np.array(out)


def test_extraction_stores_motion_energy_by_its_definition(tmp_path, extractor):
    frames = _moving_square()
    path = write_video(tmp_path / "square.mkv", frames)  # ffv1: lossless
    _, meta = extract_video(path, extractor, ExtractSettings(size=112))  # 7 x 16-pixel cells
    m = meta.motion
    assert meta.motion_rule == "mean-abs-frame-difference"
    assert m.shape == (2, 49)
    np.testing.assert_allclose(m, _by_hand(frames, 112, 7), atol=2e-6)
    assert m[:, 0].min() > 0.01 and (m.argmax(axis=1) == 0).all()  # the square's cell
    assert (m[:, 2:7] == 0).all() and (m[:, 14:] == 0).all()  # static, away from it


def test_both_extraction_paths_store_the_same_motion(tmp_path, small_extractor):
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(3):
        write_video(src / f"v{i}.mkv", np.roll(_moving_square(40), 5 * i, axis=2))
    serial, pooled = tmp_path / "serial", tmp_path / "pooled"
    extract_many([src], serial, small_extractor, SMALL, progress=False,
                 pipeline=PipelineConfig(workers=0))
    extract_many([src], pooled, small_extractor, SMALL, progress=False,
                 pipeline=PipelineConfig(workers=2))
    for i in range(3):
        a, b = (load_features(d, f"v{i}")[1].motion for d in (serial, pooled))
        direct = extract_video(src / f"v{i}.mkv", small_extractor, SMALL)[1].motion
        assert a.tolist() == b.tolist() == direct.tolist() and len(a) == 2


@pytest.mark.parametrize("motion", [[[0.1] * 49], [[0.1] * 48] * 2, [[-0.1] * 49] * 2,
                                    [["0.1"] * 49] * 2, [[True] * 49] * 2, "fast"])
def test_a_malformed_motion_record_is_refused(tmp_path, motion):
    meta = {"fps": 30.0, "n_frames": 32, "width": 64, "height": 48, "clip_len": 16,
            "stride": 16, "size": 224, "grid": 7, "endpoint": "Mixed_4e", "tail": "drop",
            "n_clips": 2, "channels": 528, "motion": motion}
    path = tmp_path / "v.json"
    path.write_text(json.dumps(meta))
    with pytest.raises(FeatureError, match=r"v\.json: motion must be n_clips \(2\) lists of "
                                           r"grid x grid \(49\) finite numbers >= 0"):
        read_feature_meta(path)


def _with_motion(feats, rng) -> None:
    """Give every planted feature file a random motion energy record."""
    for meta_path in feats.glob("*.json"):
        meta = json.loads(meta_path.read_text())
        meta["motion"] = rng.gamma(1.0, 0.05, (meta["n_clips"], 49)).round(6).tolist()
        meta_path.write_text(json.dumps(meta))


FAST = dict(iterations=20, batch_anomalous=4, batch_normal=4, progress=False)


def test_the_default_gates_by_motion_exactly(tmp_path):
    from stmil.evaluation.evaluate import evaluate
    from stmil.mil.train import train

    data, feats = tmp_path / "data", tmp_path / "feats"
    make_planted(data, feats, n_train=8, n_test=6, n_clips=8)
    _with_motion(feats, np.random.default_rng(0))
    train(data, feats, tmp_path / "gated", **FAST)
    train(data, feats, tmp_path / "plain", **FAST, motion="none")
    cfg = yaml.safe_load((tmp_path / "gated" / "config.yaml").read_text())
    assert (cfg["method"], cfg["gate"], cfg["motion"]) == ("topk", "memory", "gate")
    normal = [json.loads((feats / f"Normal_Videos_Train{i:03d}_x264.json").read_text())["motion"]
              for i in (1, 3, 5, 7)]
    # q: the 90th percentile over the normal *training* videos (validation ones left out:
    # none here), by numpy
    assert cfg["motion_scale"] == pytest.approx(np.percentile(np.ravel(normal), 90), rel=1e-12)
    gated = evaluate(data, feats, tmp_path / "gated").videos
    plain = evaluate(data, feats, tmp_path / "plain").videos
    for (v, g), (_, p) in zip(gated, plain):
        m = np.array(json.loads((feats / f"{v.record.video_id}.json").read_text())["motion"])
        np.testing.assert_allclose(g, p * np.minimum(1, m / cfg["motion_scale"]), rtol=1e-6)


def test_paper_method_and_features_without_motion_train_without_the_gate(tmp_path, capsys,
                                                                         monkeypatch):
    from stmil.mil.train import train

    data, feats = tmp_path / "data", tmp_path / "feats"
    make_planted(data, feats, n_train=8, n_test=2, n_clips=8)
    _with_motion(feats, np.random.default_rng(0))
    train(data, feats, tmp_path / "paper", **FAST, method="paper")
    train(data, feats, tmp_path / "gated", **FAST)
    cfg = yaml.safe_load((tmp_path / "paper" / "config.yaml").read_text())
    assert (cfg["motion"], cfg["motion_scale"]) == ("none", None)
    for meta_path in feats.glob("*.json"):  # features of an older stmil: no motion record
        meta = json.loads(meta_path.read_text())
        del meta["motion"]
        meta_path.write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--data", "data", "--features", "feats", "--out",
                           "explicit", "--motion", "gate", "--iterations", "2", "--quiet")
    assert code == 1
    assert_one_line_error(err, "its features carry no motion energy, which --motion gate needs",
                          "re-extract them with stmil extract --overwrite, or train with "
                          "--motion none")
    assert not (tmp_path / "explicit").exists()
    code, _, err = run_cli(capsys, "train", "--data", "data", "--features", "feats", "--out",
                           "auto", "--iterations", "2", "--quiet")
    assert code == 0, err
    assert "features without motion energy" in err and "(motion none)" in err
    assert yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["motion"] == "none"
    # a gated run scoring features without motion energy: one line naming the file
    code, _, err = run_cli(capsys, "evaluate", "--data", "data", "--features", "feats",
                           "--model", "gated", "--quiet")
    assert code == 1
    assert_one_line_error(err, f"feats/{sorted(p.stem for p in feats.glob('*Test*.json'))[0]}"
                               ".json: no motion energy, which this run's motion gate needs")
    code, _, err = run_cli(capsys, "evaluate", "--data", "data", "--features", "feats",
                           "--model", "paper", "--quiet")
    assert code == 0, err  # the paper's run has no motion gate
