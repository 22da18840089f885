"""score: which inputs it takes (one stem, one file, folders of features or videos), what it
refuses (NaN features, thresholds outside [0, 1]), that it overwrites only its own scores
files, and the overlay's source video."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stmil.errors import ConfigError
from stmil.score import score_inputs, write_scores
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import planted_run

ANOMALOUS = "FightingTest000_x264"
NORMAL = "Normal_Videos_Test001_x264"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A planted Crime2Local dataset (6 train + 4 test), its features and a trained run."""
    return planted_run(tmp_path_factory.mktemp("trust"), n_train=6, n_test=4, n_clips=6)


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
    assert_one_line_error(err, "--threshold must be a number from 0 to 1", f"got {float(value)}")
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
