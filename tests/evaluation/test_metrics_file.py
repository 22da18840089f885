"""evaluate's metrics.json: one result per split and dataset, concurrent writers, files of
the wrong shape refused and never overwritten, --json paths, boxes beyond the video."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from stmil.evaluation.evaluate import METRIC_KEYS, evaluate, read_metrics, record_metrics
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import planted_run

ANOMALOUS = "FightingTest000_x264"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A planted Crime2Local dataset (6 train + 4 test), its features and a trained run."""
    return planted_run(tmp_path_factory.mktemp("trust"), n_train=6, n_test=4, n_clips=6)


@pytest.fixture
def fresh_run(planted, tmp_path) -> Path:
    """A copy of the trained run, so that each test starts without metrics.json."""
    run = tmp_path / "run"
    shutil.copytree(planted[2], run)
    (run / "metrics.json").unlink(missing_ok=True)
    return run


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
