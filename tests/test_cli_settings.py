"""Settings as the user gave them (issue 22 items 22, 24, 27 and 32): a range error names the
``--config`` file and key, or the flag, that gave the value; calibrate suggests only flags it
has; ``--quiet`` hides progress, never warnings; bounds on synth, demo, watch and train."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

import stmil.mil.train as train_module
from stmil.mil.run import staging_path
from stmil.mil.train import train
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted

TRAIN = dict(iterations=2, hidden=8, mid=4, n_segments=2, device="cpu", progress=False)


@pytest.mark.parametrize("argv, key, value, what", [
    (["extract", "v.mp4", "--out", "o"], "clip_len", "0", "must be a whole number >= 1, got 0"),
    (["extract", "v.mp4", "--out", "o"], "workers", "-1", "must be a whole number >= 0"),
    (["extract", "v.mp4", "--out", "o"], "fps", "0", "must be a number from 0.01 to 1000"),
    (["events", "v.mp4", "--model", "run", "--threshold", "0.5"], "hysteresis", "5",
     "must be a number from 0 to 1, got 5.0"),
    (["events", "v.mp4", "--model", "run"], "threshold", "2", "must be a number from 0 to 1"),
    (["watch", "v.mp4", "--model", "run"], "timeout", "-1",
     "must be a number of seconds > 0, got -1.0"),
    (["watch", "v.mp4", "--model", "run"], "max-backoff", "0", "must be a number of seconds"),
    (["watch", "v.mp4", "--model", "run"], "heartbeat", ".nan", "must be a number of seconds"),
    (["calibrate", "run", "--data", "d", "--features", "f"], "target", "-1",
     "must be a number >= 0"),
    (["calibrate", "run", "--data", "d", "--features", "f"], "min_duration", "-1",
     "must be a number from 0"),
    (["synth", "--out", "s"], "frames", "8", "must be from 16 to 18000"),
    (["synth", "--out", "s"], "videos", "3", "must be even, from 4 to 10000"),
    (["demo", "--out", "s"], "videos", "3", "must be a whole number >= 8"),
    (["demo", "--out", "s"], "frames", "100000", "must be from 16 to 18000"),
    (["classify", "v.mp4"], "top", "0", "must be a whole number from 1 to 400"),
])
def test_a_range_error_names_the_config_file_and_key(tmp_path, capsys, monkeypatch, argv, key,
                                                     value, what):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(f"{key}: {value}\n")
    code, out, err = run_cli(capsys, *argv, "--config", "c.yaml")
    assert code == 1
    assert_one_line_error(err, f"error: c.yaml: {key} {what}")
    assert "--" + key.replace("_", "-") not in err
    assert not Path("s").exists() and not Path("o").exists()


def test_the_flag_is_named_when_it_gave_the_value(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text("timeout: -1\n")
    code, _, err = run_cli(capsys, "watch", "v.mp4", "--model", "run", "--config", "c.yaml",
                           "--timeout=-2")
    assert code == 1
    assert_one_line_error(err, "error: --timeout must be a number of seconds > 0, got -2.0")
    code, _, err = run_cli(capsys, "extract", "v.mp4", "--out", "o", "--clip-len", "0")
    assert_one_line_error(err, "error: --clip-len must be a whole number >= 1, got 0")
    # a good flag replaces a bad value of the file: the file's value is not checked
    code, _, err = run_cli(capsys, "watch", "v.mp4", "--model", "run", "--config", "c.yaml",
                           "--timeout", "3")
    assert code == 1 and "timeout" not in err and "c.yaml" not in err


@pytest.mark.parametrize("argv, needle", [
    (["synth", "--out", "s", "--frames", "100000000"],
     "error: --frames must be from 16 to 18000 (10 minutes at 30 fps), got 100000000"),
    (["synth", "--out", "s", "--videos", "100000000"],
     "error: --videos must be even, from 4 to 10000, got 100000000"),
    (["demo", "--out", "s", "--videos", "100000000"],
     "error: --videos must be even, from 4 to 10000, got 100000000"),
    (["watch", "v.mp4", "--model", "run", "--backoff", "5", "--max-backoff", "1"],
     "error: --max-backoff must be at least --backoff (5 s), got 1.0"),
])
def test_upper_bounds(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and out == ""
    assert_one_line_error(err, needle)
    assert not Path("s").exists()


@pytest.fixture()
def planted_run(tmp_path, monkeypatch) -> Path:
    """A tiny planted dataset ``data/``, features ``feats/`` and a finished ``run/``."""
    monkeypatch.chdir(tmp_path)
    make_planted(Path("data"), Path("feats"), n_train=4, n_test=2, n_clips=4, channels=8)
    train("data", "feats", "run", **TRAIN)
    return Path("run")


def test_calibrate_suggests_no_flag_it_does_not_have(planted_run, capsys):
    missing = Path("feats/Normal_Videos_Train001_x264.json")
    missing.unlink()
    code, _, err = run_cli(capsys, "calibrate", "run", "--data", "data", "--features", "feats")
    assert code == 1
    assert_one_line_error(err, f"1 listed videos without features in feats: {missing.stem}",
                          "calibrate reads the videos the run was trained on")
    assert "--skip-missing" not in err


def test_quiet_hides_progress_not_warnings(planted_run, capsys):
    """calibrate's short-split warning and evaluate's boxes-left-out warning, with --quiet."""
    code, _, loud = run_cli(capsys, "calibrate", "run", "--data", "data", "--features", "feats")
    assert code == 0
    code, _, quiet = run_cli(capsys, "calibrate", "run", "--data", "data", "--features", "feats",
                             "--quiet")
    assert code == 0 and quiet == loud
    assert "warning: run: the train split holds 4 s of normal video, far less than" in quiet
    ids = [ln for ln in Path("data/readme/Test_split_AD.txt").read_text().split() if ln]
    with open("b.pkl", "wb") as f:
        pickle.dump({i: [["x/image_0002.jpg", 1, 2, 30, 40], ["x/image_0900.jpg", 1, 2, 30, 40]]
                     for i in ids}, f)
    code, _, err = run_cli(capsys, "evaluate", "--data", "data", "--features", "feats",
                           "--model", "run", "--boxes", "b.pkl", "--quiet")
    assert code == 0, err
    assert f"warning: b.pkl[{ids[0]!r}]: 1 annotated frames from frame 900 (1-based) on lie " \
           "after the 64 frames the features describe; left out" in err


def test_resume_after_a_kill_before_the_first_checkpoint(planted_run, capsys, monkeypatch):
    """A kill leaves the staging folder without a checkpoint: not a finished run."""
    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as SIGKILL would stop it, before any checkpoint

    with monkeypatch.context() as m:
        m.setattr(train_module, "_train_in", killed)
        m.setattr(train_module, "_abandon", lambda stage, top: None)  # SIGKILL cleans nothing
        with pytest.raises(KeyboardInterrupt):
            train("data", "feats", "run", **TRAIN | dict(iterations=400))
    assert staging_path(Path("run")).is_dir()
    before = (Path("run") / "model.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "train", "--data", "data", "--features", "feats", "--out",
                           "run", "--resume", "--iterations", "400", "--hidden", "8", "--mid",
                           "4", "--n-segments", "2", "--device", "cpu", "--quiet")
    assert code == 1
    assert_one_line_error(err, "run: the interrupted training stopped before its first "
                               "checkpoint (one every 200 iterations), so there is nothing to "
                               "resume; train without --resume")
    assert "finished" not in err
    assert (Path("run") / "model.safetensors").read_bytes() == before
    shutil.rmtree(staging_path(Path("run")), ignore_errors=True)


def _loud_and_quiet(capsys, *argv) -> str:
    """stderr of ``stmil *argv --quiet``, asserted to hold the very ``warning:``/``error:``
    lines of the run without ``--quiet`` (which adds progress bars only)."""
    def said(err: str) -> list[str]:
        return [ln for ln in err.splitlines() if ln.startswith(("warning: ", "error: "))]

    code, _, loud = run_cli(capsys, *argv)
    code_q, _, quiet = run_cli(capsys, *argv, "--quiet")
    assert code == code_q and said(quiet) == said(loud) and said(quiet)
    return quiet


def test_quiet_keeps_extracts_warning(tmp_path, capsys, monkeypatch):
    # issue 22 item 27: extract's emulated-bf16 warning survives --quiet
    import stmil.features.extract as extract_mod

    monkeypatch.setattr(extract_mod, "native_bf16", lambda device: False)
    monkeypatch.chdir(tmp_path)
    Path("empty").mkdir()
    err = _loud_and_quiet(capsys, "extract", "empty", "--out", "o", "--precision", "bf16",
                          "--device", "cpu", "--size", "64", "--grid", "4")
    assert err.startswith("warning: this CPU has neither AMX nor AVX512-BF16")


def test_quiet_keeps_import_features_warning(tmp_path, capsys, monkeypatch):
    # issue 22 item 27: import-features' --frame-counts warning survives --quiet
    import numpy as np

    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    for name, n in (("A001_x264", 2), ("B001_x264", 5)):
        np.save(Path("in", f"{name}.npy"), np.ones((n, 3), np.float32))
    Path("counts.txt").write_text("A001_x264 9\n")
    for out in ("f1", "f2"):  # a fresh folder for each run: both write
        code, _, err = run_cli(capsys, "import-features", "in", "--format", "rtfm", "--out",
                               out, "--snippet-frames", "8", "--frame-counts", "counts.txt",
                               *(["--quiet"] if out == "f2" else []))
        assert code == 0, err
        assert "warning: 1 of 2 videos are not in --frame-counts (B001_x264)" in err
