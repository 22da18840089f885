"""Settings as the user gave them (issue 22 items 22, 24, 27 and 32): a range error names the
``--config`` file and key, or the flag, that gave the value; calibrate suggests only flags it
has; ``--quiet`` hides progress, never warnings; bounds on synth, demo, watch and train."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

import stmil.mil.run as run_module
import stmil.mil.train as train_module
from stmil.mil.run import staging_path
from stmil.mil.train import train
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted

TRAIN = dict(iterations=2, hidden=8, mid=4, n_segments=2, device="cpu", progress=False)


@pytest.mark.parametrize("argv, key, value, what", [
    (["extract", "v.mp4", "--out", "o"], "clip_len", "0",
     "must be a whole number from 1 to 10000, got 0"),
    (["extract", "v.mp4", "--out", "o"], "workers", "-1",
     "must be a whole number from 0 to 256, got -1"),
    (["extract", "v.mp4", "--out", "o"], "fps", "0", "must be a number from 0.01 to 1000"),
    (["events", "v.mp4", "--model", "run", "--threshold", "0.5"], "hysteresis", "5",
     "must be a number from 0 to 1, got 5"),
    (["events", "v.mp4", "--model", "run"], "threshold", "2", "must be a number from 0 to 1"),
    (["watch", "v.mp4", "--model", "run"], "timeout", "-1",
     "must be a number > 0 and <= 3600 seconds, got -1"),
    (["watch", "v.mp4", "--model", "run"], "max-backoff", "0",
     "must be a number > 0 and <= 86400 seconds, got 0"),
    (["watch", "v.mp4", "--model", "run"], "heartbeat", ".nan",
     "must be a number from 0 to 86400 seconds, got nan"),
    (["calibrate", "run", "--data", "d", "--features", "f"], "target", "-1",
     "must be a number from 0 to 1000000, got -1"),
    (["calibrate", "run", "--data", "d", "--features", "f"], "min_duration", "-1",
     "must be a number from 0"),
    (["synth", "--out", "s"], "frames", "8", "must be a whole number from 16 to 18000"),
    (["synth", "--out", "s"], "videos", "3",
     "must be an even whole number from 4 to 10000, got 3"),
    (["demo", "--out", "s"], "videos", "3",
     "must be an even whole number from 8 to 10000, got 3"),
    (["demo", "--out", "s"], "frames", "100000",
     "must be a whole number from 16 to 18000, got 100000"),
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
    assert_one_line_error(err, "error: --timeout must be a number > 0 and <= 3600 seconds, "
                               "got -2.0")
    code, _, err = run_cli(capsys, "extract", "v.mp4", "--out", "o", "--clip-len", "0")
    assert_one_line_error(err, "error: --clip-len must be a whole number from 1 to 10000, got 0")
    # a good flag replaces a bad value of the file: the file's value is not checked
    code, _, err = run_cli(capsys, "watch", "v.mp4", "--model", "run", "--config", "c.yaml",
                           "--timeout", "3")
    assert code == 1 and "timeout" not in err and "c.yaml" not in err


@pytest.mark.parametrize("argv, needle", [
    (["synth", "--out", "s", "--frames", "100000000"],
     "error: --frames must be a whole number from 16 to 18000, got 100000000"),
    (["synth", "--out", "s", "--videos", "100000000"],
     "error: --videos must be an even whole number from 4 to 10000, got 100000000"),
    (["demo", "--out", "s", "--videos", "100000000"],
     "error: --videos must be an even whole number from 8 to 10000, got 100000000"),
    (["synth", "--out", "s", "--frames", "1e8"],
     "error: --frames must be a whole number from 16 to 18000, got '1e8'"),
    (["demo", "--out", "s", "--videos", "1e8"],
     "error: --videos must be an even whole number from 8 to 10000, got '1e8'"),
    (["train", "--data", "d", "--features", "f", "--out", "s", "--hidden", str(10**20)],
     "error: --hidden must be a whole number from 1 to 65536, got 100000000000000000000"),
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
        m.setattr(run_module, "_abandon", lambda stage, top: None)  # SIGKILL cleans nothing
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


# --- one bad value per command, as a flag and as a --config key: one error form -------------


@pytest.mark.parametrize("argv, flag, key, value, rest", [
    (["extract", "v.mp4", "--out", "o"], "batch-size", "batch_size", "0",
     "must be a whole number from 1 to 4096, got 0"),
    (["classify", "v.mp4"], "top", "top", "401", "must be a whole number from 1 to 400, got 401"),
    (["train", "--data", "d", "--features", "f", "--out", "o"], "hidden", "hidden",
     "100000000000000000000",
     "must be a whole number from 1 to 65536, got 100000000000000000000"),
    (["score", "v.mp4", "--model", "run", "--out", "o"], "threshold", "threshold", "1.5",
     "must be a number from 0 to 1, got 1.5"),
    (["evaluate", "--data", "d", "--features", "f", "--model", "run"], "overlap", "overlap",
     "1.5", "must be a number > 0 and <= 1, got 1.5"),
    (["synth", "--out", "o"], "frames", "frames", "100000000",
     "must be a whole number from 16 to 18000, got 100000000"),
    (["demo", "--out", "o"], "videos", "videos", "100000000",
     "must be an even whole number from 8 to 10000, got 100000000"),
    (["serve", "o"], "port", "port", "70000", "must be a whole number from 1 to 65535, got 70000"),
    (["import-features", "a.list", "--format", "rtfm", "--out", "o"], "fps", "fps", "1000.5",
     "must be a number > 0 and <= 1000 frames per second, got 1000.5"),
    (["gt", "--data", "d", "--features", "f", "--out", "o"], "split", "split", "val",
     "must be one of train, test, all, got 'val'"),
    (["export", "--data", "d", "--features", "f", "--out", "o", "--model", "run"], "tail",
     "tail", "none", "must be one of clips, frames, got 'none'"),
    (["export-features", "f", "--out", "o"], "layout", "layout", "mgfn",
     "must be one of plain, rtfm, urdmu, got 'mgfn'"),
    (["export-model", "--out", "o"], "precision", "precision", "int4",
     "must be one of fp32, fp16, int8, got 'int4'"),
    (["events", "v.mp4", "--model", "run"], "hysteresis", "hysteresis", "1.5",
     "must be a number from 0 to 1, got 1.5"),
    (["calibrate", "run", "--data", "d", "--features", "f"], "target", "target", "2000000.5",
     "must be a number from 0 to 1000000, got 2000000.5"),
    (["watch", "v.mp4", "--model", "run"], "max-backoff", "max_backoff", "90000.5",
     "must be a number > 0 and <= 86400 seconds, got 90000.5"),
])
def test_every_command_names_a_bad_value_where_it_was_given(tmp_path, capsys, monkeypatch,
                                                            argv, flag, key, value, rest):
    """The same one-line error for a flag (``--flag must be ...``) and a ``--config`` key
    (``FILE: key must be ...``), before any work (nothing written)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv, f"--{flag}", value)
    assert (code, out) == (1, "")
    assert err == f"error: --{flag} {rest}\n"
    Path("c.yaml").write_text(f"{key}: {value}\n")
    code, out, err = run_cli(capsys, *argv, "--config", "c.yaml")
    assert (code, out) == (1, "")
    assert err == f"error: c.yaml: {key} {rest}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_every_command_is_in_the_table_above():
    from stmil.cli import COMMANDS

    covered = {"extract", "classify", "train", "score", "evaluate", "synth", "demo", "serve",
               "import-features", "gt", "export", "export-features", "export-model", "events",
               "calibrate", "watch"}
    assert set(COMMANDS) == covered


def test_a_cross_field_rule_names_both_settings_where_given(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "watch", "v.mp4", "--model", "run", "--backoff", "5",
                           "--max-backoff", "1")
    assert (code, err) == (1, "error: --max-backoff must be at least --backoff (5 s), got 1.0\n")
    Path("c.yaml").write_text("backoff: 5\nmax-backoff: 1\n")
    code, _, err = run_cli(capsys, "watch", "v.mp4", "--model", "run", "--config", "c.yaml")
    assert (code, err) == (1, "error: c.yaml: max-backoff must be at least backoff (5 s), "
                              "got 1.0\n")


@pytest.mark.parametrize("argv", [["train", "--data", "d", "--features", "f", "--out", "o"],
                                  ["extract", "v.mp4", "--out", "o"]])
def test_both_spellings_of_a_key_are_refused(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text("batch-size: 4\nbatch_size: 4\n" if argv[0] == "extract" else
                              "memory-size: 64\nmemory_size: 64\n")
    code, _, err = run_cli(capsys, *argv, "--config", "c.yaml")
    spelled = "'batch-size' and 'batch_size'" if argv[0] == "extract" else \
        "'memory-size' and 'memory_size'"
    assert (code, err) == (1, f"error: c.yaml: {spelled} are one setting given twice; "
                              "keep one\n")


def test_train_takes_either_spelling_from_config(tmp_path, capsys, monkeypatch):
    """``memory-size`` and ``memory_size`` both reach TrainConfig (train's own reader is gone)."""
    import stmil.mil.train as train_mod

    seen = {}

    def fake_train(data, features, out, config, **kw):
        seen.update(config=config, data=data)
        return train_mod.TrainSummary(Path(out), 0, 0.0, None, 0, None)

    monkeypatch.setattr(train_mod, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    for spelling in ("memory-size", "memory_size"):
        Path("c.yaml").write_text(f"{spelling}: 64\ndata: d\nfeatures: f\nout: o\n")
        code, _, err = run_cli(capsys, "train", "--config", "c.yaml", "--hidden", "8")
        assert code == 0, err
        assert (seen["config"].memory_size, seen["config"].hidden, seen["data"]) == (64, 8, "d")


@pytest.mark.parametrize("command, needles", [
    ("extract", ["--batch-size BATCH_SIZE", "2 on a CPU, 8 on a GPU) (from 1 to 4096)",
                 "{fp32,bf16}",
                 "example:\n  stmil extract videos/ --out features/"]),
    ("watch", ["--timeout SECONDS", "(> 0 and <= 3600 seconds; default 10)"]),
    ("train", ["--memory-size MEMORY_SIZE", "default 16384", "--no-skip-missing"]),
    ("synth", ["--videos VIDEOS", "(even, from 4 to 10000; default 48)"]),
])
def test_help_shows_units_bounds_defaults_choices_and_the_example(capsys, command, needles):
    with pytest.raises(SystemExit):
        run_cli(capsys, command, "--help")
    flat = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for n in needles:
        assert " ".join(n.split()) in flat, n
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
