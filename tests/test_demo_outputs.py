"""The demo writes only what it owns: it refuses a folder it did not make and bad settings
before writing, forgets only its own features, goes on after a kill, and replaces a run
under OUT/runs only when it proves the run its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stmil import demo as demo_mod
from stmil.synth.dataset import plan_videos
from tests.conftest import assert_one_line_error, file_tree, run_cli

DEAD = 999_999_999  # a pid no process has (above any pid_max)


def _ids(n_videos: int) -> set[str]:
    return {p.video_id for p in plan_videos(n_videos, 16, 0, 0.5)}



# --- demo: ownership (item 1) and settings (item 20) ---------------------------------------------


@pytest.fixture
def no_extraction(monkeypatch):
    """The demo must stop before any real work: extraction fails the test if reached."""
    def reached(*args, **kwargs):
        raise AssertionError("the demo went past its checks")

    monkeypatch.setattr(demo_mod, "FeatureExtractor", reached)


DEMO_FOREIGN = {
    "a features folder": {"features/precious.npy": "weeks of extraction"},
    "a user's file": {"notes.txt": "mine"},
    "a dataset": {"data/readme/Train_split_AD.txt": "Mine001_x264\n"},
    "an old stamp": {"synth-settings.json": json.dumps(
        {"footage": None, "n_videos": 8, "n_frames": 16, "seed": 0})},
    "a marker of the wrong shape": {"demo.json": "[1]"},
    "a marker listing a path": {"demo.json": json.dumps(
        {"format": "stmil-demo", "settings": {}, "videos": ["../../x"]})},
}


@pytest.mark.parametrize("case", list(DEMO_FOREIGN))
def test_demo_refuses_a_folder_it_did_not_make(tmp_path, monkeypatch, capsys, no_extraction,
                                              case):
    monkeypatch.chdir(tmp_path)
    for rel, text in DEMO_FOREIGN[case].items():
        (tmp_path / "P" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "P" / rel).write_text(text)
    before = file_tree(tmp_path / "P")
    code, _, err = run_cli(capsys, "demo", "--out", "P", "--videos", "8", "--frames", "16",
                           "--quiet")
    assert code == 1
    where = (tmp_path / "P").resolve()
    assert_one_line_error(err, f"error: {where}: folder is not empty and is not a stmil demo "
                               "output (no valid demo.json); choose another --out or empty it")
    assert file_tree(tmp_path / "P") == before


@pytest.mark.parametrize(("flags", "message"), [
    (["--iterations", "0"], "--iterations must be a whole number from 1 to 1000000000, got 0"),
    (["--iterations", "-5"], "--iterations must be a whole number from 1 to 1000000000, got -5"),
    (["--videos", "0"], "--videos must be an even whole number from 8 to 10000, got 0"),
    (["--videos", "4"], "--videos must be an even whole number from 8 to 10000, got 4"),
    (["--videos", "9"], "--videos must be an even whole number from 8 to 10000, got 9"),
    (["--frames", "8"], "--frames must be a whole number from 16 to 18000, got 8"),
    (["--frames", "-1"], "--frames must be a whole number from 16 to 18000, got -1"),
    (["--seed", "-1"], "--seed must be a whole number from 0 to 4294967295, got -1"),
])
def test_demo_refuses_bad_settings_before_writing(tmp_path, monkeypatch, capsys, no_extraction,
                                                  flags, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "demo", "--out", "P", "--quiet", *flags)
    assert code == 1
    assert_one_line_error(err, f"error: {message}")
    assert not (tmp_path / "P").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(val_fraction=0.0), "val_fraction must be a number > 0 and < 1, got 0.0"),
    (dict(val_fraction=float("nan")), "val_fraction must be a number > 0 and < 1, got nan"),
    (dict(n_overlays=-1), "n_overlays must be a whole number from 0 to 1000, got -1"),
    (dict(iterations=2.5), "iterations must be a whole number from 1 to 1000000000, got 2.5"),
])
def test_run_demo_refuses_bad_arguments(tmp_path, no_extraction, kwargs, message):
    from stmil.errors import ConfigError

    with pytest.raises(ConfigError, match=f"^{message.replace('.', '[.]')}$"):
        demo_mod.run_demo(tmp_path / "P", **kwargs)
    assert not (tmp_path / "P").exists()


def test_demo_marks_its_folder_first_and_forgets_only_its_features(tmp_path, monkeypatch,
                                                                   no_extraction):
    """A new folder gets demo.json before anything else; other settings delete only the feature
    files that demo.json lists, never a user's file beside them."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match="past its checks"):
        demo_mod.run_demo(Path("P"), n_videos=8, n_frames=16, progress=False)
    marker = json.loads((tmp_path / "P" / "demo.json").read_text())
    ids = sorted(_ids(8))
    assert marker == {"format": "stmil-demo", "videos": ids, "settings": {
        "footage": None, "n_videos": 8, "n_frames": 16, "seed": 0}, "runs": {},
        "training": None}
    feats = tmp_path / "P" / "features"
    feats.mkdir()
    for vid in ids:
        (feats / f"{vid}.npy").write_bytes(b"stale")
        (feats / f"{vid}.json").write_text("{}")
    (feats / f".{ids[0]}.npy.{DEAD}.k1ll3dxx.tmp").write_bytes(b"killed")
    (feats / "mine.npy").write_bytes(b"a user's")
    with pytest.raises(AssertionError, match="past its checks"):
        demo_mod.run_demo(Path("P"), n_videos=8, n_frames=20, progress=False)
    assert sorted(p.name for p in feats.iterdir()) == [".stmil", "mine.npy"]  # and a ledger
    assert json.loads((tmp_path / "P" / "demo.json").read_text())["settings"]["n_frames"] == 20
    assert json.loads((tmp_path / "P" / "data" / "synth.json").read_text())[
        "settings"]["n_frames"] == 20



@pytest.mark.parametrize("left", [[".writable.{pid}.k1ll3dxx.tmp"],
                                  [".demo.json.{pid}.k1ll3dxx.tmp"],
                                  [".writable.{pid}.k1ll3dxx.tmp",
                                   ".demo.json.{pid}.abcdefgh.tmp"]])
def test_demo_after_a_kill_before_its_marker(tmp_path, no_extraction, left):
    out = tmp_path / "P"
    out.mkdir()
    for name in left:
        (out / name.format(pid=DEAD)).write_bytes(b"")
    with pytest.raises(AssertionError, match="past its checks"):
        demo_mod.run_demo(out, n_videos=8, n_frames=16, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".stmil", "data", "demo.json"]


# --- demo: its run folders (a user's training under OUT/runs/<demo run name>) --------------------

def _demo_with_run(tmp_path, marker_extra: dict, config: dict | None = None) -> Path:
    """A demo folder whose runs/paper holds a model and (optionally) a config."""
    out = tmp_path / "P"
    run = out / "runs" / "paper"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"a user's weeks of training")
    if config is not None:
        (run / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    (out / "demo.json").write_text(json.dumps({"format": "stmil-demo", "settings": {},
                                               "videos": [], **marker_extra}))
    return out


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


MODEL = b"a user's weeks of training"
RUN_REFUSED = {
    "a marker of an older stmil (no runs)": ({}, None),
    "another model than the recorded one": ({"runs": {"paper": _sha(b"the demo's")}}, None),
    "killed while training, but the config names other data": (
        {"training": "paper"}, {"out": "{out}/runs/paper", "data": "/elsewhere/data",
                                "features": "{out}/features"}),
    "killed while training another run": (
        {"training": "grid1-baseline"}, {"out": "{out}/runs/paper", "data": "{out}/data",
                                         "features": "{out}/features"}),
}


@pytest.mark.parametrize("case", list(RUN_REFUSED))
def test_demo_refuses_a_run_it_cannot_prove_its_own(tmp_path, monkeypatch, capsys,
                                                    no_extraction, case):
    marker, config = RUN_REFUSED[case]
    out = tmp_path / "P"
    if config is not None:
        config = {k: v.format(out=out) for k, v in config.items()}
    _demo_with_run(tmp_path, marker, config)
    before = file_tree(out)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "demo", "--out", "P", "--videos", "8", "--frames", "16",
                           "--quiet")
    assert code == 1
    assert_one_line_error(err, f"error: {out / 'runs' / 'paper'}: a run the demo did not "
                               "train, or one changed since it did (yours?); move it out of "
                               "the way or choose another --out")
    assert file_tree(out) == before


@pytest.mark.parametrize("case", ["the recorded model", "killed while training it"])
def test_demo_goes_on_over_a_run_it_proves_its_own(tmp_path, no_extraction, case):
    out = tmp_path / "P"
    if case == "the recorded model":
        _demo_with_run(tmp_path, {"runs": {"paper": _sha(MODEL)}})
    else:
        _demo_with_run(tmp_path, {"training": "paper"}, {
            "out": str(out / "runs" / "paper"), "data": str(out / "data"),
            "features": str(out / "features")})
    with pytest.raises(AssertionError, match="past its checks"):
        demo_mod.run_demo(out, n_videos=8, n_frames=16, progress=False)
    assert (out / "runs" / "paper" / "model.safetensors").read_bytes() == MODEL
