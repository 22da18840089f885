"""End to end through the CLI: synth videos -> extract -> train -> evaluate -> score --overlay."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from stmil.datasets import load_dataset
from stmil.evaluation.evaluate import METRIC_KEYS, read_metrics
from stmil.synth.dataset import SynthSummary, make_dataset
from stmil.timeline import frame_labels
from tests.conftest import assert_one_line_error, run_cli

TRAIN = ["--iterations", "3", "--hidden", "16", "--mid", "4", "--device", "cpu", "--quiet"]


run = run_cli



@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> SynthSummary:
    root = tmp_path_factory.mktemp("pipeline") / "data"
    return make_dataset(root, n_videos=4, n_frames=48, width=160, height=120, seed=0,
                        progress=False)


def test_pipeline(synth, tmp_path, capsys):
    root = Path(synth.root)
    feats, mil, g1 = tmp_path / "feats", tmp_path / "mil", tmp_path / "g1"

    code, out, err = run(capsys, "extract", root / "videos", "--out", feats, "--device", "cpu",
                         "--quiet")
    assert code == 0, err
    ids = synth.train + synth.test
    assert sorted(p.stem for p in feats.glob("*.npy")) == sorted(ids)
    meta = json.loads((feats / f"{ids[0]}.json").read_text())
    assert (meta["n_clips"], meta["grid"], meta["channels"]) == (3, 7, 528)

    code, out, err = run(capsys, "train", "--data", root, "--features", feats, "--out", mil,
                         *TRAIN)
    assert code == 0, err
    assert "trained 3 iterations" in out
    for name in ("model.safetensors", "config.yaml", "history.csv"):
        assert (mil / name).is_file(), name
    assert not (mil / "checkpoint.pt").exists()
    code, out, err = run(capsys, "train", "--data", root, "--features", feats, "--out", g1,
                         "--instances", "frame", *TRAIN)
    assert code == 0, err
    assert yaml.safe_load((g1 / "config.yaml").read_text())["grid"] == 1

    code, out, err = run(capsys, "evaluate", "--data", root, "--features", feats, "--model", mil,
                         "--json", tmp_path / "m.json", "--quiet")
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics) and metrics["settings"]["n_videos"] == 2
    assert metrics == read_metrics(mil)["test"][str(root.resolve())]
    assert str(mil) in out and "frame_auc" in out
    code, out, err = run(capsys, "evaluate", "--data", root, "--features", feats, "--model", g1,
                         "--quiet")
    assert code == 0, err
    g1_test = read_metrics(g1)["test"][str(root.resolve())]
    assert g1_test["settings"]["model_grid"] == 1 and g1_test["settings"]["n_videos"] == 2
    # Its frame AUC recomputed apart from evaluate: the grid-1 run's scores of the test features
    # (one score fills each clip's 7x7 map) ranked against the annotated frames by sklearn.
    tests = load_dataset(root, "test")
    code, out, err = run(capsys, "score", *[feats / f"{r.video_id}.npy" for r in tests],
                         "--model", g1, "--out", tmp_path / "g1-scores", "--quiet")
    assert code == 0, err
    ys, ss = [], []
    for r in tests:
        res = json.loads((tmp_path / "g1-scores" / f"{r.video_id}.scores.json").read_text())
        maps = np.array(res["clip_maps"]).reshape(len(res["clip_maps"]), 49)
        assert (maps == maps[:, :1]).all()
        ss += res["frame_scores"]
        ys += frame_labels(list(r.intervals), res["n_frames"]).tolist()
    assert g1_test["frame_auc"] == pytest.approx(roc_auc_score(ys, ss), abs=1e-5)
    # The train split of the same run is recorded beside the test split, not over it.
    code, out, err = run(capsys, "evaluate", "--data", root, "--features", feats, "--model", mil,
                         "--split", "train", "--quiet")
    assert code == 0, err
    assert out.splitlines()[2].split()[:2] == [str(mil), "train"]
    assert read_metrics(mil)["test"][str(root.resolve())] == metrics

    code, out, err = run(capsys, "evaluate", "--compare", mil, g1)
    assert code == 0, err
    rows = [r.split() for r in out.strip().split("\n\n")[0].splitlines()]  # notes below
    assert rows[0][:3] == ["run", "split", "data"]
    assert [r[:3] for r in rows[2:]] == [[str(mil), "test", str(root)],
                                         [str(mil), "train", str(root)],
                                         [str(g1), "test", str(root)]]
    assert rows[2][3] == f"{metrics['frame_auc']:.4f}"
    assert rows[4][3] == f"{g1_test['frame_auc']:.4f}"

    video = next((root / "videos").rglob(f"{synth.test[0]}.*"))
    scores = tmp_path / "scores"
    code, out, err = run(capsys, "score", video, "--model", mil, "--out", scores, "--overlay",
                         "--device", "cpu", "--quiet")
    assert code == 0, err
    stem = synth.test[0]
    assert out.split() == [str(scores / f"{stem}.scores.json"),
                           str(scores / f"{stem}.overlay.mp4")]
    result = json.loads((scores / f"{stem}.scores.json").read_text())
    assert len(result["frame_scores"]) == 48 and (result["width"], result["height"]) == (160, 120)
    with av.open(str(scores / f"{stem}.overlay.mp4")) as c:
        assert c.streams.video[0].frames in (0, 48)  # 0: container does not say
        assert sum(1 for _ in c.decode(video=0)) == 48

    # A run's config.yaml is a valid --config: flags override it.
    code, out, err = run(capsys, "train", "--config", mil / "config.yaml", "--out",
                         tmp_path / "again", "--quiet")
    assert code == 0, err
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert again["iterations"] == 3 and again["hidden"] == 16 and again["grid"] == 7


def test_user_mistakes_give_one_line_errors(synth, tmp_path, capsys):
    root = Path(synth.root)
    code, _, err = run(capsys, "train", "--data", root, "--features", tmp_path / "nowhere",
                       "--out", tmp_path / "r", *TRAIN)
    assert code == 1
    assert_one_line_error(err, "nowhere: no such features folder")

    code, _, err = run(capsys, "train", "--data", root, "--out", tmp_path / "r", *TRAIN)
    assert code == 1
    assert_one_line_error(err, "the following arguments are required: --features")

    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 3\nlearning_rate: 0.1\n")
    code, _, err = run(capsys, "train", "--config", bad, "--data", root, "--features", tmp_path,
                       "--out", tmp_path / "r")
    assert code == 1
    assert_one_line_error(err, "unknown key 'learning_rate' for stmil train")

    code, _, err = run(capsys, "evaluate", "--data", root, "--features", tmp_path, "--model",
                       tmp_path / "norun")
    assert code == 1
    assert_one_line_error(err, "no model.safetensors")

    code, _, err = run(capsys, "evaluate", "--compare", tmp_path / "norun")
    assert code == 1
    assert_one_line_error(err, "no metrics.json", "stmil evaluate")

    code, out, err = run(capsys, "score", tmp_path / "missing.npy", "--model", tmp_path / "norun",
                         "--out", tmp_path / "s")
    assert code == 1
    assert_one_line_error(err, "no model.safetensors")
