"""Imported RTFM-style features learn; gt and score vectors read back; Liu & Ma boxes evaluate.

One module-scoped pipeline through the CLI, with relative paths as a user runs it: planted
(T, 10, D) files -> import-features -> train --instances frame -> evaluate -> gt / export.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from stmil.interop.gt import read_vector
from tests.conftest import assert_one_line_error, run_cli
from tests.interop.ucf import planted_rtfm

TRAIN = ["--instances", "frame", "--iterations", "30", "--hidden", "16", "--mid", "4",
         "--n-segments", "8", "--batch-anomalous", "6", "--batch-normal", "6", "--device",
         "cpu", "--quiet"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("interop")
    spans = planted_rtfm(base / "ucf", base / "rtfm")
    return base, spans


def _import_train_evaluate(capsys) -> dict:
    """import-features (train and test lists) -> train --instances frame -> evaluate --json,
    in the working folder; returns the metrics."""
    for lst in ("rtfm/train.list", "rtfm/test.list"):
        code, out, err = run_cli(capsys, "import-features", lst, "--format", "rtfm", "--out",
                                 "feats", "--quiet")
        assert code == 0, err
    code, out, err = run_cli(capsys, "train", "--data", "ucf", "--features", "feats", "--out",
                             "run", *TRAIN)
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", "--data", "ucf", "--features", "feats",
                             "--model", "run", "--json", "m.json", "--quiet")
    assert code == 0, err
    return json.loads(Path("m.json").read_text())


def test_imported_features_learn_and_vectors_match_evaluate(pipeline, capsys, monkeypatch):
    base, spans = pipeline
    monkeypatch.chdir(base)
    m = _import_train_evaluate(capsys)
    assert m["frame_auc"] > 0.9, m  # the planted snippets are found
    assert m["frame_auc_anomalous"] > 0.9, m
    for cmd, extra in (("gt", []), ("export", ["--model", "run"])):
        code, out, err = run_cli(capsys, cmd, "--data", "ucf", "--features", "feats", "--out",
                                 "vec", *extra, "--quiet")
        assert code == 0, err
    gt, scores = np.load("vec/gt.npy"), np.load("vec/scores.npy")
    # What an RTFM-style script computes from our files is evaluate's frame AUC.
    assert roc_auc_score(gt, scores) == pytest.approx(m["frame_auc"], abs=1e-6)
    labels, manifest = read_vector("vec", "gt")
    test_ids = [ln.split("/")[1].removesuffix(".mp4")
                for ln in Path("ucf/Anomaly_Test.txt").read_text().split()]
    assert [e["id"] for e in manifest["videos"]] == test_ids  # list order
    scores_manifest = read_vector("vec", "scores")[1]
    assert ([(e["id"], e["offset"], e["length"]) for e in scores_manifest["videos"]]
            == [(e["id"], e["offset"], e["length"]) for e in manifest["videos"]])
    assert manifest["tail"] == "clips" and manifest["total"] == len(gt) == 8 * 16 * 16
    for vid, (s, e) in spans.items():
        if vid in labels:  # 16 labels per snippet: ones exactly on the planted snippets
            want = np.zeros(16 * 16, np.float32)
            want[s * 16:e * 16] = 1
            np.testing.assert_array_equal(labels[vid], want)


def test_liu_ma_boxes_give_spatial_metrics_to_ucf_crime(pipeline, capsys, monkeypatch):
    base, spans = pipeline
    monkeypatch.chdir(base)
    if not Path("run/model.safetensors").is_file():
        pytest.skip("needs the run of the test before")
    ann = {}
    for vid, (s, e) in spans.items():
        if "test" in vid:  # a 160x120 box in the 320x240 annotation frame, every 16 frames
            ann[vid] = [[f"/imgs/{vid}/image_{f + 1:04d}.jpg", 0, 0, 160, 120]
                        for f in range(s * 16, e * 16, 16)]
    Path("boxes.pkl").write_bytes(pickle.dumps(ann, protocol=0))
    code, out, err = run_cli(capsys, "evaluate", "--data", "ucf", "--features", "feats",
                             "--model", "run", "--boxes", "boxes.pkl", "--json", "b.json",
                             "--quiet")
    assert code == 0, err
    m = json.loads(Path("b.json").read_text())
    # Grid 1: the predicted box is the whole 320x240 frame, IoU with the box is 1/4, and it
    # always touches the box (no false positives); TIoU counts only frames >= 0.5.
    assert m["pointing_accuracy"] == 1.0 and m["loc_false_positives"] == 0.0
    assert 0.0 < m["tiou"] <= 0.25 + 1e-9
    assert m["settings"]["boxes"] == "boxes.pkl"
    # eval, not print: Ray, once imported in this process, replaces builtins.print
    Path("evil.pkl").write_bytes(pickle.dumps({"x": eval}))
    code, out, err = run_cli(capsys, "evaluate", "--data", "ucf", "--features", "feats",
                             "--model", "run", "--boxes", "evil.pkl", "--quiet")
    assert code == 1
    assert_one_line_error(err, "evil.pkl: not a Liu & Ma annotation pickle",
                          "names builtins.eval")
    code, out, err = run_cli(capsys, "evaluate", "--data", "ucf", "--features", "feats",
                             "--model", "run", "--interpolate", "--quiet")
    assert code == 1
    assert_one_line_error(err, "--interpolate interpolates Liu and Ma's boxes: give their "
                          "pickle with --boxes")
    # Another dataset's boxes are refused, not silently left unused; a missing video is named.
    Path("other.pkl").write_bytes(pickle.dumps(
        {"Shoplifting010_x264": [["/i/image_0001.jpg", 0, 0, 10, 10]]}))
    code, out, err = run_cli(capsys, "evaluate", "--data", "ucf", "--features", "feats",
                             "--model", "run", "--boxes", "other.pkl", "--quiet")
    assert code == 1
    assert_one_line_error(err, "other.pkl: boxes none of the 4 anomalous videos evaluated")
    first = min(ann)
    Path("some.pkl").write_bytes(pickle.dumps({k: v for k, v in ann.items() if k != first}))
    code, out, err = run_cli(capsys, "evaluate", "--data", "ucf", "--features", "feats",
                             "--model", "run", "--boxes", "some.pkl", "--quiet")
    assert code == 0, err
    assert f"warning: some.pkl: no box for 1 of the 4 anomalous videos ({first})" in err


def test_a_scorer_on_imported_features_learns_either_pattern(tmp_path, capsys, monkeypatch):
    """Two datasets with the normal and the anomalous patterns swapped (same norm): an
    untrained scorer prefers one of them, so it cannot find the anomaly in both (measured with
    --lr 1e-9: frame AUC 0.0 in one, 1.0 in the other); a scorer that learns finds both."""
    for swap in (False, True):
        planted_rtfm(tmp_path / str(swap) / "ucf", tmp_path / str(swap) / "rtfm", swap=swap)
        monkeypatch.chdir(tmp_path / str(swap))
        m = _import_train_evaluate(capsys)
        assert m["frame_auc"] > 0.9 and m["frame_auc_anomalous"] > 0.9, (swap, m)


def test_the_auc_identity_on_real_video_lengths(pipeline, capsys, monkeypatch):
    """Frame counts that are not multiples of 16 (7 frames after the last snippet): with
    --tail frames, roc_auc_score(gt, scores) is evaluate's frame_auc exactly; with --tail
    clips (16 T entries a video) it is the AUC of the first 16 T frames of each video, which
    is what RTFM-style scripts compute (docs/formats.md)."""
    base, _ = pipeline
    monkeypatch.chdir(base)
    if not Path("run/model.safetensors").is_file():
        pytest.skip("needs the run of the first test")
    test_ids = [ln.split("/")[1].removesuffix(".mp4")
                for ln in Path("ucf/Anomaly_Test.txt").read_text().split()]
    Path("counts.txt").write_text("".join(f"{v} {16 * 16 + 7}\n" for v in test_ids))
    code, out, err = run_cli(capsys, "import-features", "rtfm/test.list", "--format", "rtfm",
                             "--frame-counts", "counts.txt", "--out", "real", "--quiet")
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", "--data", "ucf", "--features", "real",
                             "--model", "run", "--json", "real.json", "--quiet")
    assert code == 0, err
    frame_auc = json.loads(Path("real.json").read_text())["frame_auc"]
    vec = {}
    for tail in ("frames", "clips"):
        for cmd, extra in (("gt", []), ("export", ["--model", "run"])):
            code, out, err = run_cli(capsys, cmd, "--data", "ucf", "--features", "real",
                                     "--out", tail, "--tail", tail, *extra, "--quiet")
            assert code == 0, err
        vec[tail] = (np.load(f"{tail}/gt.npy"), np.load(f"{tail}/scores.npy"))
    assert len(vec["frames"][0]) == 8 * (16 * 16 + 7) and len(vec["clips"][0]) == 8 * 16 * 16
    assert roc_auc_score(*vec["frames"]) == pytest.approx(frame_auc, abs=1e-12)
    keep = np.concatenate([np.arange(16 * 16) + k * (16 * 16 + 7) for k in range(8)])
    assert roc_auc_score(*vec["clips"]) == pytest.approx(
        roc_auc_score(vec["frames"][0][keep], vec["frames"][1][keep]), abs=1e-12)
