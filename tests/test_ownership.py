"""The ownership rule (issue 22): one ledger per output folder says which files are stmil's.

A command replaces or deletes a file only if the folder's ledger names it with its current
bytes; a user's file under any name stmil uses is refused with its bytes unchanged. Then the
data-loss defects 1, 2, 3, 6, 7 and 13, each through the command that lost the data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import stmil.atomic as A
import stmil.ownership as O
from stmil.errors import OutputError
from tests.conftest import assert_one_line_error, file_tree, ramp_frames, run_cli, write_video
from tests.planted import make_planted

# every name stmil writes into one of its output folders (run, features, scores)
STMIL_NAMES = ["model.safetensors", "config.yaml", "history.csv", ".stmil-run",
               "calibration.json", "metrics.json", "v.npy", "v.json", "failures.json",
               "v.scores.json", "v.overlay.mp4", "v.claim"]
USER = b"the user's own bytes\n"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the ledger (relative name -> bytes)."""
    return file_tree(folder, ledger=False)


def put(data: bytes):
    """A writer for :func:`stmil.ownership.commit` that writes ``data``."""
    return lambda tmp: tmp.write_bytes(data)


def ledger_json(folder: Path) -> dict:
    """What a folder's ledger says, read as stmil reads it (ledger.json and its journal)."""
    ledger = O.Ledger.load(folder)
    return {"files": ledger.files, "legacy": ledger.legacy}


# --- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("with_ledger", [False, True])
@pytest.mark.parametrize("name", STMIL_NAMES)
def test_a_user_file_under_any_stmil_name_is_refused_bytes_unchanged(tmp_path, name,
                                                                     with_ledger):
    if with_ledger:
        O.commit(tmp_path, [(tmp_path / "other.json", put(b"{}"))], "test")
    (tmp_path / name).write_bytes(USER)
    with pytest.raises(OutputError, match=f"^{tmp_path / name}: exists and is not a file stmil "
                                          "wrote here"):
        O.commit(tmp_path, [(tmp_path / name, put(b"stmil's"))], "test")
    with pytest.raises(OutputError, match=f"^{tmp_path / name}: "):
        O.remove(tmp_path, name)
    with pytest.raises(OutputError, match=f"^{tmp_path / name}: "):
        O.check_can_write(tmp_path, [name])
    assert (tmp_path / name).read_bytes() == USER
    assert name not in (ledger_json(tmp_path)["files"] if with_ledger else {})


def test_a_file_stmil_wrote_is_replaced_and_recorded(tmp_path):
    O.commit(tmp_path, [(tmp_path / "a.json", put(b"1")), (tmp_path / "b.npy", put(b"22"))], "x")
    O.commit(tmp_path, [(tmp_path / "a.json", put(b"333"))], "y")
    assert snapshot(tmp_path) == {"a.json": b"333", "b.npy": b"22"}
    files = ledger_json(tmp_path)["files"]
    assert files["a.json"]["sha256"] == hashlib.sha256(b"333").hexdigest()
    assert (files["a.json"]["size"], files["a.json"]["command"]) == (3, "y")
    assert files["b.npy"] == {"size": 2, "sha256": hashlib.sha256(b"22").hexdigest(),
                              "command": "x"}
    O.remove(tmp_path, "a.json")
    assert snapshot(tmp_path) == {"b.npy": b"22"}
    assert set(ledger_json(tmp_path)["files"]) == {"b.npy"}


@pytest.mark.parametrize("edit", [b"2", b"", b"11"])  # same size, empty, longer
def test_a_file_stmil_wrote_then_the_user_edited_is_refused(tmp_path, edit):
    O.commit(tmp_path, [(tmp_path / "a.json", put(b"1"))], "x")
    (tmp_path / "a.json").write_bytes(edit)
    with pytest.raises(OutputError, match="a.json: exists and is not a file stmil wrote here "
                                          r"\(or it was changed since\); move it away"):
        O.commit(tmp_path, [(tmp_path / "a.json", put(b"3"))], "x")
    with pytest.raises(OutputError):
        O.remove(tmp_path, "a.json")
    assert (tmp_path / "a.json").read_bytes() == edit


def _die_after_renames(monkeypatch, n: int) -> None:
    """Make the atomic group die (as by a kill) after its first ``n`` renames."""
    real, done = os.replace, []

    def replace(a, b):
        if len(done) == n:
            raise KeyboardInterrupt
        done.append(b)
        real(a, b)
    monkeypatch.setattr(A.os, "replace", replace)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_a_kill_between_renames_leaves_no_file_of_the_user_claimed(tmp_path, monkeypatch, n):
    O.commit(tmp_path, [(tmp_path / "old.npy", put(b"old")), (tmp_path / "old.json",
                                                                 put(b"{}"))], "x")
    # the ledger's journal line is written first, then the renames: old.json, old.npy, new.npy
    _die_after_renames(monkeypatch, n)
    with pytest.raises(KeyboardInterrupt):
        O.commit(tmp_path, [(tmp_path / "new.npy", put(b"n")),
                            (tmp_path / "old.npy", put(b"new!")),
                            (tmp_path / "old.json", put(b"{1}"))], "x")
    monkeypatch.undo()
    # the files hold stmil's previous or new bytes: still ours, so the rerun replaces them
    assert snapshot(tmp_path) == {"old.npy": b"new!" if n >= 2 else b"old",
                                  "old.json": b"{1}" if n >= 1 else b"{}"}
    led = O.Ledger.load(tmp_path)
    assert led.owns("old.npy") and led.owns("old.json")
    # the ledger names new.npy, which never arrived: a user's file there is still theirs
    (tmp_path / "new.npy").write_bytes(USER)
    with pytest.raises(OutputError, match="new.npy: exists and is not a file stmil wrote"):
        O.commit(tmp_path, [(tmp_path / "new.npy", put(b"n"))], "x")
    assert (tmp_path / "new.npy").read_bytes() == USER
    O.commit(tmp_path, [(tmp_path / "old.npy", put(b"new!")),
                        (tmp_path / "old.json", put(b"{1}"))], "x")
    assert snapshot(tmp_path)["old.npy"] == b"new!"
    # the replaced bytes stay ours (``previous``) until that name's next commit
    O.commit(tmp_path, [(tmp_path / "old.npy", put(b"newer"))], "x")
    (tmp_path / "old.npy").write_bytes(b"old")
    assert not O.Ledger.load(tmp_path).owns("old.npy")


def test_folders_from_earlier_versions_go_through_the_legacy_test_once(tmp_path):
    (tmp_path / "old.json").write_text('{"ours": 1}')  # written by an earlier stmil
    (tmp_path / "mine.json").write_text('{"mine": 1}')
    ours = lambda p: "ours" in p.read_text()  # noqa: E731 (a command's old test)
    with pytest.raises(OutputError, match="mine.json"):
        O.commit(tmp_path, [(tmp_path / "mine.json", put(b"x"))], "x", legacy=ours)
    O.commit(tmp_path, [(tmp_path / "new.json", put(b"n"))], "x", legacy=ours)
    assert set(ledger_json(tmp_path)["legacy"]) == {"old.json", "mine.json"}
    # after the ledger exists, a file the user adds is never judged by the old test
    (tmp_path / "late.json").write_text('{"ours": "fake"}')
    with pytest.raises(OutputError, match="late.json"):
        O.commit(tmp_path, [(tmp_path / "late.json", put(b"x"))], "x", legacy=ours)
    # an adopted file is replaced and recorded; the old test is asked no more
    O.commit(tmp_path, [(tmp_path / "old.json", put(b"o"))], "x", legacy=ours)
    led = ledger_json(tmp_path)
    assert "old.json" in led["files"] and "old.json" not in led["legacy"]
    assert (tmp_path / "late.json").read_text() == '{"ours": "fake"}'
    assert (tmp_path / "mine.json").read_text() == '{"mine": 1}'


def test_only_files_a_command_wants_to_replace_are_hashed(tmp_path, monkeypatch):
    O.commit(tmp_path, [(tmp_path / "big.npy", put(b"0" * 1000))], "x")
    (tmp_path / "user.bin").write_bytes(b"1" * 1000)
    hashed = []
    real = O.sha256_of
    monkeypatch.setattr(O, "sha256_of", lambda p, st=None: hashed.append(Path(p).name)
                        or real(p, st))
    O.commit(tmp_path, [(tmp_path / "small.json", put(b"{}"))], "x")
    assert [h for h in hashed if not h.endswith(".tmp")] == []  # only the new file's temp


@pytest.mark.parametrize("content", [b"not json", b'{"format": "other"}', b"\xff"])
def test_a_damaged_ledger_is_a_one_line_error(tmp_path, content):
    (tmp_path / O.LEDGER_DIR).mkdir()
    O.ledger_path(tmp_path).write_bytes(content)
    with pytest.raises(OutputError, match=r"ledger.json: not a stmil ledger \(.*\); move it"):
        O.commit(tmp_path, [(tmp_path / "a", put(b"a"))], "x")
    assert not (tmp_path / "a").exists() and O.ledger_path(tmp_path).read_bytes() == content


def test_a_ledger_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / O.LEDGER_DIR).write_bytes(USER)
    with pytest.raises(OutputError, match=r"\.stmil: exists and is not stmil's ledger folder"):
        O.commit(tmp_path, [(tmp_path / "a", put(b"a"))], "x")
    assert (tmp_path / O.LEDGER_DIR).read_bytes() == USER


# --- defects 1 and 2: run folders ------------------------------------------------------------

FAST = dict(iterations=4, hidden=16, mid=4, n_segments=4, checkpoint_every=2, device="cpu",
            progress=False)
CLI_FAST = ["--iterations", "4", "--hidden", "16", "--mid", "4", "--n-segments", "4",
            "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("own")
    make_planted(base / "data", base / "feats", n_train=8, n_test=4, n_clips=8, channels=16)
    return base / "data", base / "feats"


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory) -> Path:
    """A finished run (do not modify: copy it)."""
    from stmil.mil.train import train

    run = tmp_path_factory.mktemp("ownrun") / "run"
    train(*tiny, run, **FAST)
    return run


@pytest.mark.parametrize("name,content", [
    ("model.safetensors", USER),
    ("config.yaml", b"iterations: 4\nhidden: 16\n"),  # hand-written, a valid --config
])
def test_defect1_train_refuses_a_folder_of_only_a_user_file(tiny, tmp_path, capsys, monkeypatch,
                                                            name, content):
    monkeypatch.chdir(tmp_path)
    Path("r").mkdir()
    Path("r", name).write_bytes(content)
    code, _, err = run_cli(capsys, "train", "--data", tiny[0], "--features", tiny[1],
                           "--out", "r", *CLI_FAST)
    assert code == 1
    assert_one_line_error(err, "r: ", "choose another --out")
    assert snapshot(Path("r")) == {name: content}


def test_defect1_train_with_the_config_it_writes_over_keeps_it(tiny, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("r").mkdir()
    text = b"iterations: 4\nhidden: 16\nmid: 4\nn_segments: 4\n"
    Path("r/config.yaml").write_bytes(text)
    code, _, err = run_cli(capsys, "train", "--data", tiny[0], "--features", tiny[1],
                           "--config", "r/config.yaml", "--out", "r", "--device", "cpu",
                           "--quiet")
    assert code == 1
    assert_one_line_error(err, "r: ")
    assert snapshot(Path("r")) == {"config.yaml": text}


@pytest.mark.parametrize("name,content", [
    ("calibration.json", b'{"format": "stmil-calibration", "mine": true}'),
    ("metrics.json", b'{"frame_auc": 0.5}'),
    ("config.yaml", None),  # stmil's file, edited by the user
])
def test_defect2_train_into_a_run_keeps_a_users_file(tiny, finished, tmp_path, name, content):
    from stmil.mil.train import train

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    if content is None:
        content = (run / name).read_bytes() + b"# my note\n"
    (run / name).write_bytes(content)
    before = snapshot(run)
    with pytest.raises(OutputError, match=f"^{run}: holds {name} "):
        train(*tiny, run, **FAST)
    assert snapshot(run) == before


def test_train_replaces_a_run_with_the_metrics_stmil_wrote(tiny, finished, tmp_path):
    from stmil.mil.train import train

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    O.commit(run, [(run / "metrics.json", put(b'{"version": 2, "results": {}}'))], "evaluate")
    train(*tiny, run, **FAST | {"seed": 5})
    assert sorted(os.listdir(run)) == [".stmil", ".stmil-run", "config.yaml", "history.csv",
                                       "model.safetensors"]
    assert set(ledger_json(run)["files"]) == {".stmil-run", "config.yaml", "history.csv",
                                              "model.safetensors"}


def test_a_run_of_an_earlier_version_is_still_retrained(tiny, finished, tmp_path):
    """A run folder without a ledger (an earlier stmil): its marker and names still decide."""
    from stmil.mil.train import train

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / O.LEDGER_DIR)
    (run / "metrics.json").write_text('{"version": 2, "results": {}}')
    train(*tiny, run, **FAST | {"seed": 5})
    assert not (run / "metrics.json").exists()


def test_evaluate_and_score_keep_a_users_file_in_a_folder_with_a_ledger(tmp_path):
    """Valid-looking files under stmil's names, in folders stmil already writes (ledger there):
    ``metrics.json`` and ``<id>.scores.json`` are refused, bytes unchanged."""
    from stmil.evaluation.evaluate import METRIC_KEYS, record_metrics
    from stmil.score import write_scores

    O.commit(tmp_path, [(tmp_path / "config.yaml", put(b"x: 1\n"))], "train")
    mine = {"metrics.json": b'{"version": 2, "results": {}}',
            "v.scores.json": json.dumps({"n_frames": 1, "clip_maps": [], "frame_scores": [],
                                         "boxes": []}).encode()}
    for name, content in mine.items():
        (tmp_path / name).write_bytes(content)
    result = {k: 0.5 for k in METRIC_KEYS} | {"settings": {"split": "test", "data": "/d"}}
    with pytest.raises(OutputError, match="metrics.json: exists and is not a file stmil wrote"):
        record_metrics(tmp_path, result)
    with pytest.raises(OutputError, match="v.scores.json: exists and is not a file stmil wrote"):
        write_scores(tmp_path, "v", {"n_frames": 2})
    assert snapshot(tmp_path) == mine | {"config.yaml": b"x: 1\n"}


# --- defect 3: score --overlay ---------------------------------------------------------------


def test_defect3_score_overlay_keeps_a_users_overlay(tmp_path, monkeypatch):
    from stmil.mil.train import train
    from stmil.score import score_inputs

    make_planted(tmp_path / "data", tmp_path / "feats", n_train=4, n_test=2, n_clips=6,
                 channels=528)
    train(tmp_path / "data", tmp_path / "feats", tmp_path / "run", **FAST | {"gate": "none"})
    video = write_video(tmp_path / "clip.mkv", ramp_frames(16, h=48, w=64))
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.overlay.mp4").write_bytes(USER)
    written, failed = score_inputs([video], tmp_path / "run", out, overlay=True, device="cpu",
                                   progress=False)
    assert written == [] and len(failed) == 1
    assert f"{out / 'clip.overlay.mp4'}: exists and is not a file stmil wrote" in \
        failed[0]["error"]
    assert snapshot(out) == {"clip.overlay.mp4": USER}
    (out / "clip.overlay.mp4").unlink()
    written, failed = score_inputs([video], tmp_path / "run", out, overlay=True, device="cpu",
                                   progress=False)
    assert not failed and written == [out / "clip.scores.json", out / "clip.overlay.mp4"]
    assert set(ledger_json(out)["files"]) == {"clip.scores.json", "clip.overlay.mp4"}
    # a rerun replaces stmil's own files
    assert score_inputs([video], tmp_path / "run", out, overlay=True, device="cpu",
                        progress=False)[1] == []


# --- defects 6, 7 and 13: extract ------------------------------------------------------------


@pytest.fixture()
def videos(tmp_path) -> Path:
    src = tmp_path / "videos"
    src.mkdir()
    write_video(src / "v.mkv", ramp_frames(20, h=32, w=32))
    return src


def _extract(inputs, out, small_extractor, overwrite=False):
    from stmil.features.extract import ExtractSettings, extract_many

    return extract_many(inputs, out, small_extractor, ExtractSettings(size=64), overwrite=overwrite,
                        progress=False)


@pytest.mark.parametrize("overwrite", [False, True])
def test_defect6_extract_keeps_a_user_edited_array(videos, tmp_path, small_extractor, overwrite):
    out = tmp_path / "out"
    assert _extract([videos], out, small_extractor).done == ["v"]
    np.save(out / "v.npy", np.load(out / "v.npy") * 2)  # the user's edit; the JSON is stmil's
    before = snapshot(out)
    s = _extract([videos], out, small_extractor, overwrite=overwrite)
    assert s.done == [] and len(s.failed) == 1
    assert f"{out / 'v.npy'}: exists and is not a file stmil wrote here" in s.failed[0]["error"]
    assert {k: v for k, v in snapshot(out).items() if k != "failures.json"} == before


@pytest.mark.parametrize("name", ["v.json", "v.npy", "failures.json"])
def test_extract_overwrite_keeps_a_users_file_in_its_folder(videos, tmp_path, small_extractor,
                                                            name):
    out = tmp_path / "out"
    (tmp_path / "videos" / "bad.mkv").write_bytes(b"not a video")  # so failures.json exists
    assert _extract([videos], out, small_extractor).done == ["v"]
    content = json.dumps([{"path": "/x", "error": "mine"}]).encode() if name == "failures.json" \
        else (out / name).read_bytes()[:-1] + b" "  # stmil's bytes, edited: the user's now
    (out / name).write_bytes(content)
    before = snapshot(out)
    if name == "failures.json":
        with pytest.raises(OutputError, match="failures.json: exists and is not a file stmil"):
            _extract([videos], out, small_extractor, overwrite=True)
    else:
        s = _extract([videos], out, small_extractor, overwrite=True)
        assert s.done == [] and any(f"{name}: exists and is not a file stmil" in f["error"]
                                    for f in s.failed)
        before.pop("failures.json")
    assert {k: v for k, v in snapshot(out).items() if k in before} == before


def test_defect7_extract_keeps_an_empty_user_claim_file(videos, tmp_path, small_extractor):
    out = tmp_path / "out"
    out.mkdir()
    (out / "v.claim").write_bytes(b"")
    s = _extract([videos], out, small_extractor)
    assert s.done == [] and "v.claim: exists and is not a stmil claim" in s.failed[0]["error"]
    assert (out / "v.claim").exists() and (out / "v.claim").read_bytes() == b""
    assert not (out / "v.npy").exists()


def test_a_killed_claim_never_leaves_an_empty_file(tmp_path, monkeypatch):
    from stmil.features.claims import claim_path, try_claim

    c = try_claim(tmp_path, "v")
    assert c is not None and b"stmil-claim" in claim_path(tmp_path, "v").read_bytes()
    c.release()
    assert not claim_path(tmp_path, "v").exists()


def test_defect13_a_video_named_like_stmils_own_file_is_refused(tmp_path, extractor, capsys,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("videos").mkdir()
    for name in ("failures", "a"):
        write_video(Path("videos", f"{name}.mkv"), ramp_frames(20, h=32, w=32))
    code, _, err = run_cli(capsys, "extract", "videos", "--out", "out", "--size", "64",
                           "--grid", "2", "--quiet")
    assert code == 1 and "Traceback" not in err
    assert "error: videos/failures.mkv: video id 'failures' would write failures.json" in err
    assert "1 done" in err or (Path("out/a.npy").is_file() and Path("out/a.json").is_file())
    failures = json.loads(Path("out/failures.json").read_text())
    assert [Path(f["path"]).name for f in failures] == ["failures.mkv"]
    assert not Path("out/failures.npy").exists()
    # the folder is not stuck: a rerun without the video works
    Path("videos/failures.mkv").unlink()
    code, _, err = run_cli(capsys, "extract", "videos", "--out", "out", "--size", "64",
                           "--grid", "2", "--quiet")
    assert code == 0, err
    assert json.loads(Path("out/failures.json").read_text()) == failures  # another run's entry
