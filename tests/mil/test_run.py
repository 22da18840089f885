"""The run folder (stmil.mil.run): written as a whole or not at all through its staging
folder, resume refuses what it cannot honour, checkpoints and models are read without pickle
and refused with one line when damaged, a full disk names the file."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

import stmil.mil.run as R
import stmil.mil.train as T
from stmil.errors import ConfigError, ModelError, OutputError
from stmil.mil.run import commit_folder, load_model
from stmil.mil.train import train
from tests.conftest import assert_one_line_error, log_lines, run_cli
from tests.mil.conftest import (
    CLI_FAST,
    FAST,
    interrupt_at,
    last_line,
    snapshot,
    stage_of,
)

# --- a run folder is written as a whole or not at all: items 6, 18 -----------------------------


def test_failed_retrain_leaves_the_previous_run_untouched(tiny, run_copy, monkeypatch, caplog):
    before = snapshot(run_copy)
    calls, loss = [], T.weak_loss

    def loss_that_fails(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return loss(*args, **kw)

    monkeypatch.setattr(T, "weak_loss", loss_that_fails)
    caplog.set_level(logging.INFO, logger="stmil")
    with pytest.raises(RuntimeError, match="boom"):
        train(*tiny, run_copy, **FAST | {"lr": 0.05})
    assert snapshot(run_copy) == before  # config, model, history, metrics: all old
    # Beside it, hidden, only what --resume needs: the checkpoint of iteration 2, no cache.
    stage = stage_of(run_copy)
    assert sorted(os.listdir(stage)) == [".stmil-run", "checkpoint-00000002.safetensors",
                                         "checkpoint.json", "config.yaml"]
    assert log_lines(caplog)[-1] == (
        f"training stopped; its checkpoint (iteration 2) is kept in {stage} for --resume")


def test_failed_first_train_leaves_no_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(T, "weak_loss", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train(*tiny, tmp_path / "run", **FAST)
    assert os.listdir(tmp_path) == []  # no run folder, config.yaml or cache


@pytest.mark.parametrize("factor", [float("inf"), float("nan")])
def test_diverged_training_is_an_error_not_a_nan_model(tiny, run_copy, monkeypatch, factor):
    """A loss that stops being finite (settings in range no longer make it diverge: the old
    lr 1e30 and lambda2 1e38 are refused by their upper bounds)."""
    weak_loss = T.weak_loss

    def diverging(*args, **kwargs):
        loss, parts = weak_loss(*args, **kwargs)
        return loss * factor, parts

    monkeypatch.setattr(T, "weak_loss", diverging)
    before = snapshot(run_copy)
    with pytest.raises(ConfigError, match=r"training diverged.*; lower --lr \(now "):
        train(*tiny, run_copy, **FAST | {"checkpoint_every": 100})
    assert snapshot(run_copy) == before
    assert sorted(os.listdir(run_copy.parent)) == ["run"]


def test_failed_train_removes_only_the_folders_it_created(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(T, "weak_loss", lambda *a, **k: 1 / 0)
    (tmp_path / "runs").mkdir()  # the user's, empty: kept
    with pytest.raises(ZeroDivisionError):
        train(*tiny, tmp_path / "runs" / "a" / "b" / "run", **FAST)
    assert os.listdir(tmp_path) == ["runs"] and os.listdir(tmp_path / "runs") == []


def test_a_concurrent_training_into_the_same_run_is_refused(tiny, interrupted):
    stage = stage_of(interrupted)
    fd = R.lock_folder(stage, interrupted)  # as a training in progress holds it
    try:
        before = snapshot(stage)
        for resume in (False, True):
            with pytest.raises(OutputError, match=f"^{interrupted}: another stmil train is "
                               "writing it .*locked\\); wait for it or choose another --out"):
                train(*tiny, interrupted, resume=resume, **FAST)
        assert snapshot(stage) == before
    finally:
        os.close(fd)
    train(*tiny, interrupted, resume=True, **FAST)  # free again


def test_retrain_replaces_the_whole_run(tiny, run_copy):
    old_model = (run_copy / "model.safetensors").read_bytes()
    train(*tiny, run_copy, **FAST | {"seed": 3})
    assert sorted(os.listdir(run_copy)) == [".stmil", ".stmil-run", "config.yaml",
                                            "history.csv", "model.safetensors"]  # metrics too
    assert (run_copy / "model.safetensors").read_bytes() != old_model
    assert load_model(run_copy)[1]["seed"] == 3
    assert sorted(os.listdir(run_copy.parent)) == ["run"]


MARK = '{"stmil": "0.1.0"}'  # what train writes to .stmil-run (before ledgers: adopted)


@pytest.mark.parametrize("entries,match", [
    ({"notes.txt": "mine"}, "not empty and not a stmil run folder"),
    ({"features/a.npy": "x"}, "not empty and not a stmil run folder"),
    # a stmil-like name proves nothing: without the marker (or a ledger) it is the user's
    ({"config.yaml": "x", "notes.txt": "mine"}, "not empty and not a stmil run folder"),
    ({"model.safetensors": "x"}, "not empty and not a stmil run folder"),
    # a marker of other content than train writes is the user's too (issue 22 item 1)
    ({".stmil-run": "{}", "notes.txt": "mine"}, "not empty and not a stmil run folder"),
    ({".stmil-run": MARK, "notes.txt": "mine"},
     r"holds notes.txt \(not written by stmil, or changed since\)"),
    ({".stmil-run": MARK, "model.safetensors": "x", "cache/mine.npy": "x"},
     r"holds cache/mine.npy \(not written by stmil, or changed since\)"),
])
def test_foreign_output_folders_are_refused_and_kept(tiny, tmp_path, monkeypatch, entries,
                                                     match):
    monkeypatch.chdir(tmp_path)
    for name, text in entries.items():
        Path("out", name).parent.mkdir(parents=True, exist_ok=True)
        Path("out", name).write_text(text)
    before = snapshot(Path("out"))
    with pytest.raises(OutputError, match=f"^out: {match}"):
        train(*tiny, "out", **FAST)
    assert snapshot(Path("out")) == before
    assert sorted(os.listdir(".")) == ["out"]


def test_output_that_is_a_symlink_is_refused(tiny, finished, tmp_path):
    (tmp_path / "run").symlink_to(finished)
    with pytest.raises(OutputError, match="run: is a symbolic link; pass the folder it points"):
        train(*tiny, tmp_path / "run", **FAST)
    assert (tmp_path / "run").is_symlink() and (finished / "model.safetensors").is_file()


@pytest.mark.parametrize("out,shown", [(".", "."), ("..", ".."), ("./", "."),
                                       ("sub/..", "sub/..")])
def test_the_current_folder_is_never_replaced(tiny, tmp_path, monkeypatch, out, shown):
    (tmp_path / "here" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(OutputError, match=f"^{shown}: is the current folder or holds it"):
        train(*tiny, out, **FAST)
    assert sorted(os.listdir(tmp_path)) == ["here"] and os.listdir(".") == ["sub"]


def test_output_that_is_a_file_is_refused(tiny, tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(OutputError, match="run: exists and is not a folder"):
        train(*tiny, tmp_path / "run", **FAST)


def test_empty_output_folder_is_used(tiny, tmp_path):
    (tmp_path / "run").mkdir()
    train(*tiny, tmp_path / "run", **FAST)
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("exchange", [True, False])
def test_commit_folder_swaps_whole_folders(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(R, "_exchange", lambda a, b: False)
    stage, out = tmp_path / ".out.stmil-staging", tmp_path / "out"
    for folder, text in ((stage, "new"), (out, "old")):
        (folder / "cache").mkdir(parents=True)
        (folder / "config.yaml").write_text(text)
    (out / "metrics.json").write_text("{}")
    commit_folder(stage, out)
    assert snapshot(out) == {"config.yaml": b"new"}
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_exchange_swaps_two_folders_in_one_call(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    assert R._exchange(tmp_path / "a", tmp_path / "b")  # supported here: no fallback
    assert os.listdir(tmp_path / "b") == ["x"] and os.listdir(tmp_path / "a") == []


def test_a_commit_killed_between_fallback_renames_is_undone(tiny, tmp_path, finished):
    """Without RENAME_EXCHANGE a kill between the two renames leaves ``.out.stmil-old``."""
    old = tmp_path / ".run.stmil-old"
    shutil.copytree(finished, old)
    before = snapshot(old)
    with pytest.raises(ConfigError, match="finished, nothing to resume"):
        train(*tiny, tmp_path / "run", resume=True, **FAST)
    assert snapshot(tmp_path / "run") == before and not old.exists()


# --- resume: item 6 ----------------------------------------------------------------------------


def test_resume_of_a_finished_run_is_refused(tiny, run_copy, capsys):
    before = snapshot(run_copy)
    with pytest.raises(ConfigError, match="run: finished, nothing to resume; train without "
                       "--resume to retrain it from scratch"):
        train(*tiny, run_copy, resume=True, **FAST)
    code, _, err = run_cli(capsys, "train", "--data", tiny[0], "--features", tiny[1],
                           "--out", run_copy, "--resume", *CLI_FAST)
    assert code == 1
    assert_one_line_error(err, f"{run_copy}: finished, nothing to resume")
    assert snapshot(run_copy) == before


def test_resume_with_nothing_to_resume_is_refused(tiny, tmp_path):
    with pytest.raises(ConfigError, match="run: no interrupted training to resume"):
        train(*tiny, tmp_path / "run", resume=True, **FAST)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("change,match", [
    ({"lr": 5.0}, "lr 0.01 recorded vs 5.0 given"),
    ({"hidden": 8}, "hidden 16 recorded vs 8 given"),
    ({"seed": 1}, "seed 0 recorded vs 1 given"),
    ({"n_segments": 3}, "n_segments 4 recorded vs 3 given"),
    ({"instances": "frame"}, "instances 'cuboid' recorded vs 'frame' given"),
    ({"grid": 1}, "instances 'cuboid' recorded vs 'frame' given"),
    ({"val_fraction": 0.25}, "val_fraction 0.0 recorded vs 0.25 given"),
    ({"supervision": "boxes"}, "supervision 'weak' recorded vs 'boxes' given"),
])
def test_resume_refuses_changed_settings(tiny, interrupted, change, match):
    with pytest.raises(ConfigError, match=f"run: cannot resume with other settings \\({match}\\);"
                       " rerun with the recorded settings, or train without --resume"):
        train(*tiny, interrupted, resume=True, **FAST | change)
    assert stage_of(interrupted).is_dir() and not interrupted.exists()


def test_resume_refuses_other_features_or_data(tiny, interrupted, tmp_path):
    other = tmp_path / "other-feats"
    shutil.copytree(tiny[1], other)
    with pytest.raises(ConfigError, match=f"cannot resume .*features '{tiny[1]}' recorded vs "
                       f"'{other}' given"):
        train(tiny[0], other, interrupted, resume=True, **FAST)
    data = tmp_path / "other-data"
    shutil.copytree(tiny[0], data)
    with pytest.raises(ConfigError, match=f"data '{tiny[0]}' recorded vs '{data}' given"):
        train(data, tiny[1], interrupted, resume=True, **FAST)


def test_resume_refuses_features_changed_in_place(tiny, tmp_path, monkeypatch):
    """Same folders, but a feature file was rewritten since the checkpoint."""
    data, feats = tmp_path / "data", tmp_path / "feats"
    shutil.copytree(tiny[0], data)
    shutil.copytree(tiny[1], feats)
    with monkeypatch.context() as m:
        interrupt_at(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train(data, feats, tmp_path / "run", **FAST)
    npy = next(feats.glob("Fighting*.npy"))
    np.save(npy, np.load(npy) * np.float16(1.01))
    with pytest.raises(ConfigError, match="the train videos or their feature files changed"):
        train(data, feats, tmp_path / "run", resume=True, **FAST)


def test_resume_to_more_iterations_equals_one_longer_run(tiny, interrupted, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stmil")
    summary = train(*tiny, interrupted, resume=True,
                    **FAST | {"iterations": 8, "checkpoint_every": 3})
    assert summary.iterations == 8 and "resumed from iteration 4" in log_lines(caplog)
    train(*tiny, tmp_path / "whole", **FAST | {"iterations": 8})
    assert (interrupted / "history.csv").read_bytes() == \
        (tmp_path / "whole" / "history.csv").read_bytes()
    a, b = load_file(interrupted / "model.safetensors"), load_file(
        tmp_path / "whole" / "model.safetensors")
    assert all(a[k].equal(b[k]) for k in a)
    assert not stage_of(interrupted).exists()


def test_resume_past_the_total_is_refused(tiny, interrupted):
    with pytest.raises(ConfigError, match="checkpoint is at iteration 4, past iterations 3; "
                       "pass --iterations 4 or more"):
        train(*tiny, interrupted, resume=True, **FAST | {"iterations": 3})


def test_train_without_resume_discards_an_interrupted_training(tiny, interrupted, caplog):
    caplog.set_level(logging.INFO, logger="stmil")
    train(*tiny, interrupted, **FAST)
    assert any("discarding the interrupted training" in m and "--resume" in m
               for m in log_lines(caplog))
    assert not stage_of(interrupted).exists() and (interrupted / "model.safetensors").is_file()


# --- checkpoints without pickle: item 14, item 18 (stale temps) --------------------------------


def test_checkpoint_is_safetensors_and_json(interrupted):
    stage = stage_of(interrupted)
    side = json.loads((stage / "checkpoint.json").read_text())
    assert side["iteration"] == 4 and side["file"] == "checkpoint-00000004.safetensors"
    assert len(side["history"]) == 4 and side["config"]["lr"] == 0.01
    tensors = load_file(stage / side["file"])
    assert tensors["torch_rng"].dtype == torch.uint8
    assert {"model.net.0.weight", "optim.0.sum", "optim.0.step"} <= set(tensors)
    assert not list(stage.glob("*.pt"))


def _damage(stage: Path, how: str) -> str:
    """Damage the checkpoint in ``stage``; return the file the error must name."""
    st, js = stage / "checkpoint-00000004.safetensors", stage / "checkpoint.json"
    side = json.loads(js.read_text())
    if how == "empty tensors":
        st.write_bytes(b"")
    elif how == "truncated tensors":
        st.write_bytes(st.read_bytes()[:100])
    elif how == "random tensors":
        st.write_bytes(np.random.default_rng(0).bytes(4000))
    elif how == "missing tensors":
        st.unlink()
    elif how == "empty json":
        js.write_bytes(b"")
        return str(js)
    elif how == "random json":
        js.write_bytes(np.random.default_rng(0).bytes(300))
        return str(js)
    elif how == "json list":
        js.write_text("[1, 2]")
        return str(js)
    elif how == "json wrong type":
        js.write_text(json.dumps(side | {"iteration": "x"}))
        return str(js)
    elif how == "json best_auc 7":
        js.write_text(json.dumps(side | {"best_auc": 7}))
        return str(js)
    elif how == "json file outside":  # a name reaching out of the folder is never opened
        js.write_text(json.dumps(side | {"file": "../checkpoint-00000004.safetensors"}))
        return str(js)
    elif how == "json history junk":
        js.write_text(json.dumps(side | {"history": [1, 2, 3, 4]}))
        return str(js)
    elif how == "json wrong rng":
        # consistent pair whose numpy RNG state is junk
        js.write_text(json.dumps(side | {"numpy_rng": {"bit_generator": "nope"}}))
        return str(js)
    elif how == "tensors of another model":
        blob = st_save({"model.net.0.weight": torch.zeros(2, 2), "torch_rng":
                        torch.get_rng_state()})
        st.write_bytes(blob)
        import hashlib

        js.write_text(json.dumps(side | {"sha256": hashlib.sha256(blob).hexdigest()}))
        return str(js)
    return str(st)


@pytest.mark.parametrize("how", ["empty tensors", "truncated tensors", "random tensors",
                                 "missing tensors", "empty json", "random json", "json list",
                                 "json wrong type", "json history junk", "json wrong rng",
                                 "tensors of another model", "json best_auc 7",
                                 "json file outside"])
def test_damaged_checkpoint_is_a_one_line_error(tiny, interrupted, capsys, how):
    named = _damage(stage_of(interrupted), how)
    with pytest.raises(ModelError, match=f"^{named}: .*; delete .*stmil-staging or train "
                       "without --resume$") as e:
        train(*tiny, interrupted, resume=True, **FAST)
    if how == "json best_auc 7":  # the engine's rule, in the file's words
        assert ": best_auc must be -1 (none yet) or a validation AUC from 0 to 1, got 7;" \
            in str(e.value)
    code, _, err = run_cli(capsys, "train", "--data", tiny[0], "--features", tiny[1],
                           "--out", interrupted, "--resume", *CLI_FAST)
    assert code == 1
    assert_one_line_error(last_line(err), named, "train without --resume")
    assert not interrupted.exists()


@pytest.mark.parametrize("blob", [b"", b"\x80\x02garbage", bytes(range(256))])
def test_old_pickle_checkpoint_is_never_loaded(tiny, tmp_path, capsys, monkeypatch, blob):
    """An interrupted run of an older stmil: ``config.yaml`` and ``checkpoint.pt`` (with the
    marker; without it the folder is not a run at all, issue 22 item 1)."""
    monkeypatch.chdir(tmp_path)
    Path("run").mkdir()
    Path("run/config.yaml").write_text("iterations: 6\n")
    Path("run/checkpoint.pt").write_bytes(blob)
    Path("run/.stmil-run").write_text(MARK)
    code, _, err = run_cli(capsys, "train", "--data", tiny[0], "--features", tiny[1],
                           "--out", "run", "--resume", *CLI_FAST)
    assert code == 1
    assert_one_line_error(last_line(err), "run/checkpoint.pt: a checkpoint of an older stmil "
                          "(pickle), which is never loaded; train without --resume")
    assert "weights_only" not in err
    Path("run/.stmil-run").unlink()
    code, _, err = run_cli(capsys, "train", "--data", tiny[0], "--features", tiny[1],
                           "--out", "run", "--resume", *CLI_FAST)
    assert code == 1 and "weights_only" not in err
    assert_one_line_error(last_line(err), "run: not empty and not a stmil run folder")
    assert Path("run/checkpoint.pt").read_bytes() == blob


def test_stale_temporary_files_are_cleaned_on_resume(tiny, interrupted):
    stage = stage_of(interrupted)
    stale = stage / ".checkpoint.json.999999999.abcdefgh.tmp"  # its writer is long gone
    stale.write_text("half")
    (stage / "cache").mkdir()
    (stage / "cache" / ".bags.npy.999999999.abcdefgh.tmp").write_text("half")
    train(*tiny, interrupted, resume=True, **FAST)
    assert not stage.exists()
    assert sorted(os.listdir(interrupted)) == [".stmil", ".stmil-run", "config.yaml",
                                               "history.csv", "model.safetensors"]


def test_a_foreign_file_in_the_staging_folder_is_refused(tiny, interrupted):
    (stage_of(interrupted) / "mine.txt").write_text("x")
    with pytest.raises(OutputError, match="stmil-staging: holds mine.txt, which stmil did not"):
        train(*tiny, interrupted, **FAST)
    assert (stage_of(interrupted) / "mine.txt").read_text() == "x"


# --- a full disk: items 11, 21 --------------------------------------------------------------------


def test_disk_full_while_building_bags_is_a_one_line_error(tiny, run_copy, capsys,
                                                           monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    before = snapshot(run_copy)
    code, _, err = run_cli(capsys, "train", "--data", tiny[0], "--features", tiny[1],
                           "--out", run_copy, *CLI_FAST)
    assert code == 1
    assert_one_line_error(last_line(err), "/run/cache/bags.npy: No space left on device "
                          "(allocating the 0 MiB bag cache; free space")
    assert "stmil-staging" not in last_line(err)  # issue 22 item 30: the run, not its staging
    assert snapshot(run_copy) == before  # the previous run is untouched
    assert sorted(os.listdir(run_copy.parent)) == ["run"]  # no sparse bags.npy, no staging


@pytest.mark.parametrize("victim", ["checkpoint-00000002.safetensors", "checkpoint.json",
                                    "model.safetensors", "history.csv"])
def test_disk_full_while_writing_outputs_names_the_file(tiny, run_copy, capsys, monkeypatch,
                                                         victim):
    """Item 21: a full disk reads "<file>: No space left on device", never a torch internal."""
    real_open = open

    def full_open(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        if "w" in mode and Path(file).name.startswith(f".{victim}."):
            f.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr("builtins.open", full_open)
    monkeypatch.setattr("io.open", full_open)
    before = snapshot(run_copy)
    code, _, err = run_cli(capsys, "train", "--data", tiny[0], "--features", tiny[1],
                           "--out", run_copy, *CLI_FAST)
    assert code == 1
    assert_one_line_error(last_line(err), f"/run/{victim}: No space left on device")
    assert "stmil-staging" not in last_line(err)  # issue 22 item 30: the run, not its staging
    assert snapshot(run_copy) == before


# --- model files: items 12, 13, 17 -------------------------------------------------------------


def _rewrite(path: Path, tensors: dict | None = None, meta: dict | None = None) -> None:
    """Rewrite a model file with other tensors and/or metadata."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        old_meta = f.metadata()
    tensors = load_file(path) | (tensors or {})
    path.write_bytes(st_save(tensors, metadata=old_meta if meta is None else meta))


def _config(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["stmil_config"])


@pytest.mark.parametrize("how,match", [
    ("empty", r"not a stmil model \(0 bytes, truncated or empty\)"),
    ("truncated", "not a stmil model"),
    ("random", "not a stmil model"),
    ("nan weights", r"NaN or Inf weights in net.0.weight"),
    ("inf weights", r"NaN or Inf weights in net.3.bias"),
    ("hidden x", r"hidden must be a whole number from 1 to 65536, got 'x'"),
    ("hidden bool", r"hidden must be a whole number from 1 to 65536, got True"),
    ("hidden 0", r"hidden must be a whole number from 1 to 65536, got 0"),
    ("dropout 2", r"dropout must be a number >= 0 and < 1, got 2.0"),
    ("missing keys", r"missing in_dim, grid"),
    ("metadata list", r"bad metadata \(stmil_config is list, not a mapping\)"),
    ("motion x", r"motion must be one of none, gate, got 'x'"),
    ("motion scale 0", r"motion_scale must be a number > 0, got 0"),
    ("motion scale missing", r"motion_scale must be a number > 0 with motion gate, got None"),
    ("no metadata", r"not a stmil model \(no readable stmil_config metadata\)"),
    ("wrong sizes", r"weights do not match the recorded sizes"),
])
def test_damaged_model_is_a_one_line_model_error(run_copy, how, match):
    path = run_copy / "model.safetensors"
    cfg = _config(path)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:-50])
    elif how == "random":
        path.write_bytes(np.random.default_rng(1).bytes(2000))
    elif how == "nan weights":
        w = load_file(path)["net.0.weight"]
        w[0, 0] = float("nan")
        _rewrite(path, {"net.0.weight": w})
    elif how == "inf weights":
        _rewrite(path, {"net.3.bias": torch.full((4,), float("inf"))})
    elif how == "hidden x":
        _rewrite(path, meta={"stmil_config": json.dumps(cfg | {"hidden": "x"})})
    elif how == "hidden bool":
        _rewrite(path, meta={"stmil_config": json.dumps(cfg | {"hidden": True})})
    elif how == "hidden 0":
        _rewrite(path, meta={"stmil_config": json.dumps(cfg | {"hidden": 0})})
    elif how == "dropout 2":
        _rewrite(path, meta={"stmil_config": json.dumps(cfg | {"dropout": 2.0})})
    elif how == "missing keys":
        cut = {k: v for k, v in cfg.items() if k not in ("in_dim", "grid")}
        _rewrite(path, meta={"stmil_config": json.dumps(cut)})
    elif how == "motion x":
        _rewrite(path, meta={"stmil_config": json.dumps(cfg | {"motion": "x"})})
    elif how == "motion scale 0":
        _rewrite(path, meta={"stmil_config": json.dumps(cfg | {"motion": "gate",
                                                                "motion_scale": 0})})
    elif how == "motion scale missing":
        _rewrite(path, meta={"stmil_config": json.dumps(
            {k: v for k, v in cfg.items() if k != "motion_scale"} | {"motion": "gate"})})
    elif how == "metadata list":
        _rewrite(path, meta={"stmil_config": "[1, 2]"})
    elif how == "no metadata":
        _rewrite(path, meta={})
    elif how == "wrong sizes":
        _rewrite(path, meta={"stmil_config": json.dumps(cfg | {"hidden": 8})})
    with pytest.raises(ModelError, match=f"^{path}: {match}.*; retrain the run with stmil "
                       "train$"):
        load_model(run_copy)


def test_damaged_model_through_evaluate_and_score_cli(tiny, run_copy, capsys, monkeypatch):
    monkeypatch.chdir(run_copy.parent)
    Path("run/model.safetensors").write_bytes(b"\x00" * 10)
    code, _, err = run_cli(capsys, "evaluate", "--data", tiny[0], "--features", tiny[1],
                           "--model", "run")
    assert code == 1
    assert_one_line_error(err, "run/model.safetensors: not a stmil model", "retrain")
    npy = next(Path(tiny[1]).glob("*.npy"))
    code, _, err = run_cli(capsys, "score", npy, "--model", "run", "--out", "scores")
    assert code == 1
    assert_one_line_error(err, "run/model.safetensors: not a stmil model", "retrain")


def test_model_file_gets_usual_permissions(finished):
    mode = (finished / "model.safetensors").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
