"""Trust in score and evaluate: collisions, NaN, per-split metrics, corrupt metrics files.

Each test names the item of the trust issue (issue 8) it holds fixed.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from stmil.errors import ConfigError
from stmil.evaluation.evaluate import METRIC_KEYS, evaluate, read_metrics, record_metrics
from stmil.mil.train import train
from stmil.score import score_inputs, write_scores
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted

FAST = dict(iterations=6, hidden=16, mid=4, n_segments=4, device="cpu", progress=False)
ANOMALOUS = "FightingTest000_x264"
NORMAL = "Normal_Videos_Test001_x264"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A planted Crime2Local dataset (6 train + 4 test), its features and a trained run."""
    base = tmp_path_factory.mktemp("trust")
    data, feats, run = base / "data", base / "feats", base / "run"
    make_planted(data, feats, n_train=6, n_test=4, n_clips=6, channels=16)
    train(data, feats, run, **FAST)
    return data, feats, run


@pytest.fixture
def fresh_run(planted, tmp_path) -> Path:
    """A copy of the trained run, so that each test starts without metrics.json."""
    run = tmp_path / "run"
    shutil.copytree(planted[2], run)
    (run / "metrics.json").unlink(missing_ok=True)
    return run


def copy_features(feats: Path, dest: Path, *ids: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for vid in ids:
        for ext in (".npy", ".json"):
            shutil.copy(feats / f"{vid}{ext}", dest / f"{vid}{ext}")
    return dest


# --- item 5: two inputs with one stem ----------------------------------------------------------


def test_score_refuses_two_folders_with_the_same_stem(planted, tmp_path, capsys, monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("a"), ANOMALOUS)
    copy_features(feats, Path("b"), ANOMALOUS, NORMAL)
    code, out, err = run_cli(capsys, "score", "a", "b", "--model", run, "--out", "s", "--quiet")
    assert code == 1 and out == ""
    assert_one_line_error(err, f"a/{ANOMALOUS}.npy and b/{ANOMALOUS}.npy share the id "
                          f"'{ANOMALOUS}'", "rename one of them")
    assert not Path("s").exists()  # refused before anything was written


def test_score_refuses_a_npy_and_a_video_with_the_same_stem(planted, tmp_path, monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS)
    Path("v").mkdir()
    Path("v", f"{ANOMALOUS}.mp4").write_bytes(b"")  # never opened: refused before extraction
    with pytest.raises(ConfigError, match=f"^f/{ANOMALOUS}.npy and v/{ANOMALOUS}.mp4 share the "
                       f"id '{ANOMALOUS}': both would be scored to {ANOMALOUS}.scores.json"):
        score_inputs([f"f/{ANOMALOUS}.npy", "v"], run, "s", progress=False)
    assert not Path("s").exists()


def test_score_of_one_file_named_twice_scores_it_once(planted, tmp_path, monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS)
    written, failed = score_inputs(["f", f"f/{ANOMALOUS}.npy", f"./f/{ANOMALOUS}.npy"], run, "s",
                                   progress=False)
    assert failed == [] and written == [Path("s", f"{ANOMALOUS}.scores.json")]


def test_score_of_a_missing_feature_file_names_it_and_scores_the_rest(planted, tmp_path, capsys,
                                                                      monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS)
    code, out, err = run_cli(capsys, "score", "typo.npy", f"f/{ANOMALOUS}.npy", "--model", run,
                             "--out", "s", "--quiet")
    assert code == 1
    assert err.splitlines()[0] == "error: typo.npy: no such feature file"  # not 'typo.json'
    assert out.split() == [f"s/{ANOMALOUS}.scores.json"]


# --- item 22: a folder of .npy files and videos ------------------------------------------------


def test_score_refuses_a_folder_with_both_features_and_videos(planted, tmp_path, capsys,
                                                              monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("mix"), ANOMALOUS, NORMAL)
    Path("mix", "sub").mkdir()
    Path("mix", "sub", "clip.avi").write_bytes(b"")
    code, out, err = run_cli(capsys, "score", "mix", "--model", run, "--out", "s", "--quiet")
    assert code == 1 and out == ""
    assert_one_line_error(err, "mix: holds both .npy features (2, e.g. "
                          f"{ANOMALOUS}.npy) and videos (1, e.g. sub/clip.avi)",
                          "name the files to score")
    assert not Path("s").exists()


# --- item 9: NaN features, NaN thresholds, NaN in JSON -----------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_score_refuses_non_finite_features_naming_the_file(planted, tmp_path, capsys,
                                                           monkeypatch, bad):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS, NORMAL)
    x = np.load(Path("f", f"{ANOMALOUS}.npy"))
    x[2, 5, 3] = bad
    np.save(Path("f", f"{ANOMALOUS}.npy"), x)
    code, out, err = run_cli(capsys, "score", "f", "--model", run, "--out", "s", "--quiet")
    assert code == 1
    assert out.split() == [str(Path("s", f"{NORMAL}.scores.json"))]  # the good one is scored
    assert_one_line_error(err, f"f/{ANOMALOUS}.npy: NaN or infinite feature values")
    assert not Path("s", f"{ANOMALOUS}.scores.json").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.1", "1.5"])
def test_score_refuses_a_threshold_outside_0_1(planted, tmp_path, capsys, value):
    _, feats, run = planted
    code, out, err = run_cli(capsys, "score", feats / f"{ANOMALOUS}.npy", "--model", run,
                             "--out", tmp_path / "s", f"--threshold={value}")
    assert code == 1 and out == ""
    assert_one_line_error(err, "--threshold must be a number in [0, 1]", f"got {float(value)}")
    assert not (tmp_path / "s").exists()


def test_scores_json_never_holds_a_bare_nan(tmp_path):
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_scores(tmp_path, "v", {"frame_scores": [0.5, float("nan")]})
    assert list(tmp_path.iterdir()) == []


# --- the data rule: score overwrites only its own scores files --------------------------------


@pytest.mark.parametrize("content", [b"my notes\n", b"[1, 2]", b'{"frame_scores": []}',
                                     b"\x00\xff"])
def test_score_never_overwrites_a_file_it_did_not_write(planted, tmp_path, capsys, monkeypatch,
                                                         content):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS)
    Path("s").mkdir()
    Path("s", f"{ANOMALOUS}.scores.json").write_bytes(content)
    code, out, err = run_cli(capsys, "score", "f", "--model", run, "--out", "s", "--quiet")
    assert code == 1 and out == ""
    assert_one_line_error(err, f"s/{ANOMALOUS}.scores.json: exists and is not a stmil scores "
                          "file; refusing to overwrite it")
    assert Path("s", f"{ANOMALOUS}.scores.json").read_bytes() == content


def test_score_replaces_its_own_scores_and_refuses_a_file_as_out(planted, tmp_path, capsys,
                                                                 monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS)
    for threshold in ("0.9", "0.1"):
        code, out, err = run_cli(capsys, "score", "f", "--model", run, "--out", "s", "--quiet",
                                 "--threshold", threshold)
        assert code == 0, err
    assert json.loads(Path("s", f"{ANOMALOUS}.scores.json").read_text())["threshold"] == 0.1
    Path("file").write_text("x")
    code, out, err = run_cli(capsys, "score", "f", "--model", run, "--out", "file", "--quiet")
    assert code == 1 and out == ""
    assert err == "error: file: exists and is not a folder; choose another output folder\n"
    assert Path("file").read_text() == "x"


# --- item 22: the overlay's source video -------------------------------------------------------


def test_score_overlay_names_the_missing_source_video(planted, tmp_path, capsys, monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS)
    code, out, err = run_cli(capsys, "score", f"f/{ANOMALOUS}.npy", "--model", run, "--out", "s",
                             "--overlay", "--quiet")
    assert code == 1 and out == ""
    assert_one_line_error(err, f"f/{ANOMALOUS}.npy: source video {ANOMALOUS}.mp4 not found",
                          "score the video itself")
    assert not Path("s", f"{ANOMALOUS}.scores.json").exists()


def test_score_overlay_names_a_moved_source_video(planted, tmp_path, monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS)
    meta_path = Path("f", f"{ANOMALOUS}.json")
    meta = json.loads(meta_path.read_text())
    meta["source"] = "gone/nowhere.mp4"
    meta_path.write_text(json.dumps(meta))
    written, failed = score_inputs(["f"], run, "s", overlay=True, progress=False)
    assert written == []
    assert failed[0]["error"] == (f"f/{ANOMALOUS}.npy: source video gone/nowhere.mp4 not found "
                                  f"(as recorded in f/{ANOMALOUS}.json); put the video back "
                                  "there, or score the video itself")


def test_score_overlay_of_features_without_a_source(planted, tmp_path, monkeypatch):
    _, feats, run = planted
    monkeypatch.chdir(tmp_path)
    copy_features(feats, Path("f"), ANOMALOUS)
    meta_path = Path("f", f"{ANOMALOUS}.json")
    meta = json.loads(meta_path.read_text())
    del meta["source"]
    meta_path.write_text(json.dumps(meta))
    written, failed = score_inputs(["f"], run, "s", overlay=True, progress=False)
    assert written == []
    assert failed[0]["error"] == (f"f/{ANOMALOUS}.json: records no source video; score the "
                                  "video itself to get an overlay")


# --- item 7: metrics per split and per dataset -------------------------------------------------


def test_evaluate_keeps_metrics_per_split_and_dataset(planted, fresh_run, tmp_path, capsys,
                                                      monkeypatch):
    data, feats, _ = planted
    monkeypatch.chdir(tmp_path)
    other = Path("other")
    shutil.copytree(data, other)
    test = evaluate(data, feats, fresh_run).result
    train_ = evaluate(data, feats, fresh_run, split="train").result
    again = evaluate(other, feats, fresh_run).result
    stored = read_metrics(fresh_run)
    assert sorted(stored) == ["test", "train"]
    assert sorted(stored["test"]) == sorted([str(data.resolve()), str(other.resolve())])
    assert stored["test"][str(data.resolve())]["frame_auc"] == test["frame_auc"]
    assert stored["train"][str(data.resolve())]["frame_auc"] == train_["frame_auc"]
    assert stored["test"][str(other.resolve())]["frame_auc"] == again["frame_auc"]
    assert stored["train"][str(data.resolve())]["settings"]["n_videos"] == 6
    assert stored["test"][str(data.resolve())]["settings"]["n_videos"] == 4

    code, out, err = run_cli(capsys, "evaluate", "--compare", fresh_run)
    assert code == 0, err
    table, notes = out.strip().split("\n\n")  # the notes under the table: docs/metrics.md
    assert "frame_ap_trapezoid is the AP papers report" in notes
    rows = [line.split() for line in table.splitlines()]
    assert rows[0][:3] == ["run", "split", "data"]
    tests = sorted([[str(data.resolve()), str(data)], [str(other.resolve()), "other"]])
    assert [r[1:3] for r in rows[2:]] == [["test", t[1]] for t in tests] + [["train", str(data)]]
    assert rows[4][3] == f"{train_['frame_auc']:.4f}"


def test_read_metrics_accepts_the_first_format(planted, fresh_run):
    data, feats, _ = planted
    flat = evaluate(data, feats, fresh_run).result
    shutil.rmtree(fresh_run / ".stmil")  # a run of stmil 0.1: no ledger
    (fresh_run / "metrics.json").write_text(json.dumps(flat))  # what stmil 0.1 wrote
    assert read_metrics(fresh_run) == {"test": {str(data.resolve()): json.loads(
        json.dumps(flat))}}
    evaluate(data, feats, fresh_run, split="train")  # adds to it, keeps the test row
    assert sorted(read_metrics(fresh_run)) == ["test", "train"]


def test_concurrent_evaluations_keep_every_result(tmp_path):
    """Writers take turns (a lock on the run folder): none loses another's result."""
    good = {k: 0.5 for k in METRIC_KEYS}

    def work(i: int) -> None:
        for j in range(10):
            record_metrics(tmp_path, dict(good, settings={"split": "test", "data": f"/d{i}-{j}"}))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(read_metrics(tmp_path)["test"]) == sorted(f"/d{i}-{j}" for i in range(8)
                                                            for j in range(10))


# --- items 17 and 21: metrics.json of the wrong shape; --json paths ----------------------------

GOOD = {"frame_auc": 0.5, "frame_ap": 0.5, "false_alarm_rate": 0.1, "cuboid_auc": None,
        "pixel_auroc": None, "pointing_accuracy": None,
        "settings": {"split": "test", "data": "/d"}}
BAD_METRICS = [
    (b"[1, 2]", "expected an object with 'version' and 'results', got list"),
    (b"\x00\x9f\xff binary", "not UTF-8 text at byte 1"),
    (b'{"frame_auc": 0.', "invalid JSON at line 1 column 16"),
    (b"{}", "expected an object with 'version' and 'results', got no 'results' object"),
    (b'{"version": 2, "results": {"test": [1]}}', "results.test: expected an object keyed by"),
    (b'{"version": 9, "results": {}}', "version 9, expected 2"),
    (json.dumps({"version": 2, "results": {"test": {"/d": {"frame_auc": 0.5}}}}).encode(),
     "results.test['/d']: missing keys frame_ap, false_alarm_rate"),
    (json.dumps(dict(GOOD, frame_auc="high")).encode(),
     "result: frame_auc must be a number in [0, 1] or null, got 'high'"),
    (json.dumps(dict(GOOD, frame_ap=7)).encode(),
     "result: frame_ap must be a number in [0, 1] or null, got 7"),
    (json.dumps(dict(GOOD, settings=[])).encode(),
     "result: settings must be an object with split and data"),
    (json.dumps({"version": 2, "results": {"test": {"/d": GOOD}}}).replace("0.1", "NaN").encode(),
     "results.test['/d']: false_alarm_rate must be a number in [0, 1] or null, got nan"),
]


@pytest.mark.parametrize("content,problem", BAD_METRICS)
def test_compare_of_a_bad_metrics_json_is_a_one_line_error(tmp_path, capsys, monkeypatch,
                                                           content, problem):
    monkeypatch.chdir(tmp_path)
    Path("r").mkdir()
    Path("r", "metrics.json").write_bytes(content)
    code, out, err = run_cli(capsys, "evaluate", "--compare", "r")
    assert code == 1 and out == ""
    assert_one_line_error(err, f"r/metrics.json: not a stmil metrics file ({problem}",
                          "move it away or delete it")


@pytest.mark.parametrize("content,problem", BAD_METRICS[:3])
def test_evaluate_refuses_to_overwrite_a_bad_metrics_json(planted, fresh_run, content, problem):
    data, feats, _ = planted
    (fresh_run / "metrics.json").write_bytes(content)
    with pytest.raises(ValueError, match=r"metrics.json: not a stmil metrics file \("
                       + problem.replace("[", r"\[").replace("(", r"\(")):
        evaluate(data, feats, fresh_run)
    assert (fresh_run / "metrics.json").read_bytes() == content


@pytest.mark.parametrize("dest,message", [
    ("nowhere/m.json", "nowhere/m.json: folder nowhere does not exist; create it first"),
    ("adir", "adir: is a folder; give --json a file path like adir/m.json"),
    ("notes.txt", "notes.txt: exists and is not a stmil evaluation result; refusing to "
                  "overwrite it"),
    ("run/metrics.json", "run/metrics.json: is the run's own metrics.json"),
])
def test_evaluate_json_errors_name_the_users_path(planted, fresh_run, tmp_path, capsys,
                                                  monkeypatch, dest, message):
    data, feats, _ = planted
    monkeypatch.chdir(tmp_path)
    Path("adir").mkdir()
    Path("notes.txt").write_text("my notes\n")
    code, out, err = run_cli(capsys, "evaluate", "--data", data, "--features", feats,
                             "--model", "run", "--json", dest, "--quiet")
    assert code == 1 and out == ""
    assert_one_line_error(err, message)
    assert ".tmp" not in err
    assert Path("notes.txt").read_text() == "my notes\n"
    assert not Path("run", "metrics.json").exists()  # refused before any work


# --- item 19 through evaluate: a box beyond the video's end ------------------------------------


def test_evaluate_refuses_a_box_beyond_the_video_naming_file_and_line(planted, fresh_run,
                                                                      tmp_path, capsys):
    data, feats, _ = planted
    other = tmp_path / "data"
    shutil.copytree(data, other)
    box_file = other / "readme" / "Txt annotations" / f"{ANOMALOUS}.txt"
    lines = box_file.read_text().splitlines()
    fields = lines[-1].split()
    fields[5], fields[6] = "500", "0"  # a visible box on frame 500 of a 96-frame video
    box_file.write_text("\n".join([*lines, " ".join(fields)]))
    code, out, err = run_cli(capsys, "evaluate", "--data", other, "--features", feats,
                             "--model", fresh_run, "--quiet")
    assert code == 1
    assert_one_line_error(err, f"{box_file}:{len(lines) + 1}: box on frame 500, but video "
                          f"{ANOMALOUS} (224x224, 96 frames) ends at frame 95")
    assert not (fresh_run / "metrics.json").exists()
