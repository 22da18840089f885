"""The ownership rule (issue 22) in the commands that had their own "is this ours" test: gt,
export, export-features, evaluate --json, synth and demo. For each: a user's file under every
name the command writes in its output folder is refused in one line, bytes unchanged, and a
rerun replaces the command's own files. Then defect 31 (export-features leaves the file of a
video removed since) and defect 14 (a moved demo folder fails for good)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import stmil.ownership as O
from stmil.errors import OutputError
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted
from tests.test_ownership import FAST, USER, ledger_json, snapshot

SYNTH = ["--videos", "4", "--frames", "16", "--quiet"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A dataset, its features and a run trained on them (do not modify: copy the run)."""
    from stmil.mil.train import train

    base = tmp_path_factory.mktemp("owncmd")
    make_planted(base / "data", base / "feats", n_train=8, n_test=4, n_clips=8, channels=16)
    train(base / "data", base / "feats", base / "run", **FAST)
    return base / "data", base / "feats", base / "run"


def _refused(code: int, err: str, path: Path | str) -> None:
    assert code == 1
    assert_one_line_error(err, f"error: {path}: exists and is not a file stmil wrote here")


# --- gt and export -----------------------------------------------------------------------------

VECTORS = {"gt": ["gt.npy", "gt.json"], "export": ["scores.npy", "scores.json"]}


def _vector_argv(cmd: str, planted, out: str) -> list:
    data, feats, run = planted
    return [cmd, "--data", data, "--features", feats, "--out", out, "--quiet",
            *(["--model", run] if cmd == "export" else [])]


@pytest.mark.parametrize("cmd,name", [(c, n) for c, names in VECTORS.items() for n in names])
def test_gt_and_export_refuse_a_users_file_under_each_name(planted, tmp_path, capsys,
                                                          monkeypatch, cmd, name):
    monkeypatch.chdir(tmp_path)
    Path("o").mkdir()
    O.commit(Path("o"), [(Path("o/other.txt"), lambda t: t.write_text("x"))], "test")
    mine = {name: USER}
    if name.endswith(".npy"):  # with the manifest stmil would write beside it: still the user's
        assert run_cli(capsys, *_vector_argv(cmd, planted, "ref"))[0] == 0
        mine[name.replace(".npy", ".json")] = Path("ref", name.replace(".npy", ".json")
                                                   ).read_bytes()
    for n, content in mine.items():
        Path("o", n).write_bytes(content)
    before = snapshot(Path("o"))
    code, _, err = run_cli(capsys, *_vector_argv(cmd, planted, "o"))
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("error: o/") and "refusing to overwrite it" in err
    assert snapshot(Path("o")) == before


@pytest.mark.parametrize("cmd", list(VECTORS))
def test_gt_and_export_rerun_replaces_their_own_files(planted, tmp_path, capsys, monkeypatch,
                                                      cmd):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, _, err = run_cli(capsys, *_vector_argv(cmd, planted, "o"))
        assert code == 0, err
    files = ledger_json(Path("o"))["files"]
    assert {n: files[n]["command"] for n in VECTORS[cmd]} == dict.fromkeys(VECTORS[cmd], cmd)
    # a folder from before ledgers: the manifest beside the array still proves both stmil's
    shutil.rmtree(Path("o", O.LEDGER_DIR))
    code, _, err = run_cli(capsys, *_vector_argv(cmd, planted, "o"))
    assert code == 0, err
    # a user's edit of the array is theirs now
    Path("o", VECTORS[cmd][0]).write_bytes(USER)
    code, _, err = run_cli(capsys, *_vector_argv(cmd, planted, "o"))
    _refused(code, err, Path("o", VECTORS[cmd][0]))
    assert Path("o", VECTORS[cmd][0]).read_bytes() == USER


# --- evaluate --json ---------------------------------------------------------------------------


def test_evaluate_json_refuses_a_users_file_and_replaces_its_own(planted, tmp_path, capsys,
                                                                 monkeypatch):
    data, feats, finished = planted
    monkeypatch.chdir(tmp_path)
    shutil.copytree(finished, "run")
    argv = ["evaluate", "--data", data, "--features", feats, "--model", "run", "--quiet"]
    Path("o").mkdir()
    Path("o/m.json").write_bytes(USER)
    code, _, err = run_cli(capsys, *argv, "--json", "o/m.json")
    assert code == 1
    assert_one_line_error(err, "error: o/m.json: exists and is not a stmil evaluation result")
    assert snapshot(Path("o")) == {"m.json": USER}
    Path("o/m.json").unlink()
    for _ in range(2):  # a rerun replaces its own result
        code, _, err = run_cli(capsys, *argv, "--json", "o/m.json")
        assert code == 0, err
    assert ledger_json(Path("o"))["files"]["m.json"]["command"] == "evaluate"
    # a valid result the user put there after the ledger (a copy) is theirs
    shutil.copyfile("o/m.json", "o/mine.json")
    before = snapshot(Path("o"))
    code, _, err = run_cli(capsys, *argv, "--json", "o/mine.json")
    _refused(code, err, "o/mine.json")
    assert snapshot(Path("o")) == before


# --- export-features and defect 31 -------------------------------------------------------------


def _two_videos(planted, where: Path) -> tuple[Path, list[str]]:
    """A features folder holding copies of two of the planted videos' features."""
    feats = planted[1]
    ids = sorted(p.stem for p in feats.glob("*.json"))[:2]
    where.mkdir()
    for vid in ids:
        for x in (".npy", ".json"):
            shutil.copyfile(feats / f"{vid}{x}", where / f"{vid}{x}")
    return where, ids


@pytest.mark.parametrize("which", ["array", "features.list", "export.json"])
def test_export_features_refuses_a_users_file_under_each_name(planted, tmp_path, capsys,
                                                             monkeypatch, which):
    monkeypatch.chdir(tmp_path)
    feats, ids = _two_videos(planted, Path("f"))
    name = f"{ids[0]}.npy" if which == "array" else which
    assert run_cli(capsys, "export-features", "f", "--out", "o", "--quiet")[0] == 0
    Path("o", name).write_bytes(USER)  # the user's now (stmil's name, other bytes)
    before = snapshot(Path("o"))
    code, _, err = run_cli(capsys, "export-features", "f", "--out", "o", "--quiet")
    _refused(code, err, Path("o", name))
    assert snapshot(Path("o")) == before


def test_export_features_rerun_replaces_its_own_files(planted, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _two_videos(planted, Path("f"))
    for _ in range(2):
        code, _, err = run_cli(capsys, "export-features", "f", "--out", "o", "--quiet")
        assert code == 0, err
    assert {e["command"] for e in ledger_json(Path("o"))["files"].values()} == {
        "export-features"}
    shutil.rmtree(Path("o", O.LEDGER_DIR))  # an export from before ledgers: export.json says
    code, _, err = run_cli(capsys, "export-features", "f", "--out", "o", "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("ledger", [True, False])
def test_defect31_export_features_deletes_the_file_of_a_removed_video(planted, tmp_path, capsys,
                                                                      monkeypatch, ledger):
    monkeypatch.chdir(tmp_path)
    _, ids = _two_videos(planted, Path("f"))
    Path("o").mkdir()
    Path("o/notes.txt").write_bytes(USER)
    assert run_cli(capsys, "export-features", "f", "--out", "o", "--quiet")[0] == 0
    if not ledger:  # an export of an earlier version: its export.json lists its files
        shutil.rmtree(Path("o", O.LEDGER_DIR))
    for x in (".npy", ".json"):
        Path("f", f"{ids[1]}{x}").unlink()
    code, _, err = run_cli(capsys, "export-features", "f", "--out", "o", "--quiet")
    assert code == 0, err
    assert sorted(snapshot(Path("o"))) == sorted(["export.json", "features.list", "notes.txt",
                                                  f"{ids[0]}.npy"])
    assert Path("o/notes.txt").read_bytes() == USER
    assert [Path(p).stem for p in Path("o/features.list").read_text().split()] == [ids[0]]


def test_defect31_an_edited_orphan_is_the_users_and_stays(planted, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, ids = _two_videos(planted, Path("f"))
    assert run_cli(capsys, "export-features", "f", "--out", "o", "--quiet")[0] == 0
    np.save(Path("o", f"{ids[1]}.npy"), np.zeros(3))  # the user's edit
    edited = Path("o", f"{ids[1]}.npy").read_bytes()
    for x in (".npy", ".json"):
        Path("f", f"{ids[1]}{x}").unlink()
    code, _, err = run_cli(capsys, "export-features", "f", "--out", "o", "--quiet")
    assert code == 0, err
    assert "are no longer listed but were changed since" in err  # --quiet: progress only
    assert Path("o", f"{ids[1]}.npy").read_bytes() == edited


# --- synth -------------------------------------------------------------------------------------


def _synth_names(root: Path) -> list[str]:
    return sorted(n for n in O.files_of(root) if not n.endswith("/"))


@pytest.fixture(scope="module")
def synthed(tmp_path_factory) -> Path:
    """A synth output of ``SYNTH`` (do not modify: copy it)."""
    from stmil.synth.dataset import make_dataset

    root = tmp_path_factory.mktemp("ownsynth") / "ds"
    make_dataset(root, n_videos=4, n_frames=16, progress=False)
    return root


def test_synth_commits_every_file_with_its_ledger(synthed):
    files = ledger_json(synthed)["files"]
    assert sorted(files) == _synth_names(synthed)
    assert {e["command"] for e in files.values()} == {"synth"}


@pytest.mark.parametrize("index", range(10))  # every file a 4-video synth output holds
def test_synth_refuses_a_users_file_under_each_name(synthed, tmp_path, capsys, monkeypatch,
                                                    index):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(synthed, "ds")
    names = _synth_names(Path("ds"))
    assert len(names) == 10
    name = names[index]
    Path("ds", name).write_bytes(USER)
    before = snapshot(Path("ds"))
    code, _, err = run_cli(capsys, "synth", "--out", "ds", *SYNTH)
    assert code == 1
    if name == "synth.json":
        assert_one_line_error(err, "error: ds: folder is not empty and is not a stmil synth "
                                   "output")
    else:
        _refused(code, err, Path("ds", name))
    assert snapshot(Path("ds")) == before


def test_synth_rerun_replaces_its_own_files_and_migrates_an_old_folder(synthed, tmp_path,
                                                                       capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(synthed, "ds")
    first = snapshot(Path("ds"))
    assert run_cli(capsys, "synth", "--out", "ds", *SYNTH)[0] == 0
    assert snapshot(Path("ds")) == first
    # a synth output from before ledgers: the files its synth.json lists are adopted
    shutil.rmtree(Path("ds", O.LEDGER_DIR))
    Path("ds/notes.txt").write_bytes(USER)
    assert run_cli(capsys, "synth", "--out", "ds", "--seed", "3", "--overwrite", *SYNTH)[0] == 0
    assert sorted(ledger_json(Path("ds"))["files"]) == [
        n for n in _synth_names(Path("ds")) if n != "notes.txt"]
    assert Path("ds/notes.txt").read_bytes() == USER


def test_synth_keeps_a_changed_file_it_no_longer_makes(synthed, tmp_path, monkeypatch, caplog):
    """Other settings (--overwrite): the old run's files that the new one does not make go,
    unless the user changed them since (theirs now: kept, with a warning)."""
    from stmil.synth.dataset import make_dataset, owned_files, plan_videos

    monkeypatch.chdir(tmp_path)
    shutil.copytree(synthed, "ds")
    files = {s: set(owned_files(plan_videos(4, 16, s, 0.5))) for s in range(20)}
    seed = next(s for s in range(1, 20) if files[0] - files[s])
    gone = sorted(files[0] - files[seed])
    Path("ds", gone[0]).write_bytes(USER)
    make_dataset(Path("ds"), n_videos=4, n_frames=16, seed=seed, progress=False,
                 overwrite=True)
    assert Path("ds", gone[0]).read_bytes() == USER
    assert not any(Path("ds", n).exists() for n in gone[1:])
    assert set(_synth_names(Path("ds"))) == files[seed] | {"synth.json", gone[0]}
    assert "were changed since, so they are left in place" in caplog.text


# --- demo and defect 14 ------------------------------------------------------------------------


@pytest.fixture
def no_extraction(monkeypatch):
    """The demo must stop before any real work: extraction fails the test if reached."""
    from stmil import demo as demo_mod

    def reached(*args, **kwargs):
        raise AssertionError("the demo went past its checks")

    monkeypatch.setattr(demo_mod, "FeatureExtractor", reached)


def _demo_started(out: Path) -> None:
    from stmil.demo import run_demo

    with pytest.raises(AssertionError, match="past its checks"):
        run_demo(out, n_videos=8, n_frames=16, progress=False)


@pytest.mark.parametrize("name", ["report.html", "demo.json"])
def test_demo_refuses_a_users_file_under_each_name(tmp_path, capsys, monkeypatch,
                                                   no_extraction, name):
    monkeypatch.chdir(tmp_path)
    _demo_started(Path("P"))
    assert ledger_json(Path("P"))["files"]["demo.json"]["command"] == "demo"
    if name == "demo.json":  # a valid marker, edited: the user's
        marker = json.loads(Path("P/demo.json").read_text())
        Path("P/demo.json").write_text(json.dumps(marker | {"videos": []}))
    else:
        Path("P", name).write_bytes(USER)
    before = snapshot(Path("P"))
    code, _, err = run_cli(capsys, "demo", "--out", "P", "--videos", "8", "--frames", "16",
                           "--quiet")
    assert code == 1
    where = (tmp_path / "P").resolve()
    if name == "demo.json":
        assert_one_line_error(err, f"error: {where}: folder is not empty and is not a stmil "
                                   "demo output")
    else:
        _refused(code, err, where / name)
    assert snapshot(Path("P")) == before


@pytest.mark.parametrize("command", ["train", "demo"])
def test_demo_knows_its_runs_by_their_ledger(tmp_path, capsys, monkeypatch, no_extraction,
                                             command):
    """A run the demo trained says so in its ledger, wherever the folder is now; a user's
    ``stmil train`` there says ``train``, and is refused."""
    monkeypatch.chdir(tmp_path)
    _demo_started(Path("P"))
    run = Path("P/runs/paper")
    run.mkdir(parents=True)
    for name in ("model.safetensors", "config.yaml", ".stmil-run"):
        Path(run, name).write_bytes(USER)
    O.record_folder(run, command)
    shutil.move("P", "moved")
    before = snapshot(Path("moved"))
    if command == "demo":
        _demo_started(Path("moved"))  # on to the work: the run is the demo's
        return
    code, _, err = run_cli(capsys, "demo", "--out", "moved", "--videos", "8", "--frames", "16",
                           "--quiet")
    assert code == 1
    assert_one_line_error(err, "runs/paper: a run the demo did not train")
    assert snapshot(Path("moved")) == before


@pytest.mark.slow
def test_defect14_demo_goes_on_in_a_moved_or_copied_folder(tmp_path, capsys, monkeypatch):
    """The demo folder moved (and then copied) elsewhere: a rerun works, making again the
    features of its videos from the files now in the folder, with no --overwrite to pass."""
    monkeypatch.chdir(tmp_path)
    tiny = ("--videos", "8", "--frames", "16", "--iterations", "3", "--quiet")
    code, _, err = run_cli(capsys, "demo", "--out", "dm", *tiny)
    assert code == 0, err
    Path("dm/notes.txt").write_bytes(USER)
    shutil.move("dm", "dm_ref")
    code, printed, err = run_cli(capsys, "demo", "--out", "dm_ref", *tiny)
    assert code == 0, err
    assert "8 done, 0 skipped, 0 failed" in printed  # features of the videos now there
    assert "--overwrite" not in err
    shutil.copytree("dm_ref", "dm_copy", symlinks=True)
    code, printed, err = run_cli(capsys, "demo", "--out", "dm_copy", *tiny)
    assert code == 0, err
    for out in ("dm_ref", "dm_copy"):
        assert Path(out, "notes.txt").read_bytes() == USER
        meta = json.loads(Path(out, "features", json.loads(Path(out, "demo.json").read_text())[
            "videos"][0] + ".json").read_text())
        assert meta["source"].startswith(str((tmp_path / out).resolve()))


def test_a_users_file_in_a_folder_no_command_wrote_is_never_pruned(tmp_path):
    (tmp_path / "a.npy").write_bytes(USER)
    assert O.prune(tmp_path, ["a.npy", "gone.npy"]) == ["a.npy"]
    assert (tmp_path / "a.npy").read_bytes() == USER
    with pytest.raises(OutputError):
        O.check_can_write(tmp_path, ["a.npy"])
