"""synth writes only what it owns and commits it whole: it refuses a folder it did not make
(or other settings, unless --overwrite), and a killed run or a full disk leaves nothing a
rerun does not clean."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import av
import pytest

from stmil.datasets import load_dataset
from stmil.synth import dataset as synth_mod
from stmil.synth import write as synth_write
from stmil.synth.dataset import SynthError, make_dataset, plan_videos
from tests.conftest import assert_one_line_error, file_tree, limit_file_size, run_cli

DEAD = 999_999_999  # a pid no process has (above any pid_max)
TINY = dict(n_videos=4, width=64, height=48, n_frames=16, progress=False, workers=1)


def _ids(n_videos: int) -> set[str]:
    return {p.video_id for p in plan_videos(n_videos, 16, 0, 0.5)}



# --- synth: ownership (item 2) -------------------------------------------------------------------

FOREIGN = {
    "a user's file": {"notes.txt": "mine"},
    "another dataset": {"readme/Train_split_AD.txt": "Mine001_x264\n",
                        "videos/Mine001_x264.mp4": "not a video"},
    "corrupt marker": {"synth.json": "{not json"},
    "marker of the wrong shape": {"synth.json": "[1, 2]"},
    "marker listing a file outside": {"synth.json": json.dumps(
        {"seed": 0, "settings": {}, "complete": True, "files": ["../../etc/passwd"]})},
    "marker listing an absolute path": {"synth.json": json.dumps(
        {"seed": 0, "settings": {}, "complete": True, "files": ["/etc/passwd"]})},
}


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("case", list(FOREIGN))
def test_synth_refuses_a_folder_it_did_not_make(tmp_path, monkeypatch, capsys, case, overwrite):
    monkeypatch.chdir(tmp_path)
    for rel, text in FOREIGN[case].items():
        (tmp_path / "ds" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / rel).write_text(text)
    before = file_tree(tmp_path / "ds")
    argv = ["synth", "--out", "ds", "--videos", "4", "--frames", "16", "--quiet"]
    code, _, err = run_cli(capsys, *argv, *(["--overwrite"] if overwrite else []))
    assert code == 1
    assert_one_line_error(err, "error: ds: folder is not empty and is not a stmil synth output "
                               "(no valid synth.json); choose another --out or empty it")
    assert file_tree(tmp_path / "ds") == before


def test_synth_reruns_same_settings_refuses_others_unless_overwrite(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.chdir(tmp_path)
    make_dataset(Path("ds"), seed=0, **TINY)
    first = file_tree(tmp_path / "ds")
    make_dataset(Path("ds"), seed=0, **TINY)  # same settings: rewritten, byte for byte
    assert file_tree(tmp_path / "ds") == first
    for other, diff in ((dict(n_videos=6), "n_videos 4 -> 6"), (dict(seed=1), "seed 0 -> 1"),
                        (dict(n_frames=20), "n_frames 16 -> 20")):
        with pytest.raises(SynthError, match=rf"^ds: holds a synth output with other settings "
                                             rf"\({diff}\); pass --overwrite to replace it, or "
                                             r"choose another --out$"):
            make_dataset(Path("ds"), **{**TINY, "seed": 0, **other})
        assert file_tree(tmp_path / "ds") == first
    # the CLI flag: replaces the old output; old-only videos and boxes go, nothing is left over
    (tmp_path / "ds" / "notes.txt").write_text("a user's note in a synth output stays")
    before = file_tree(tmp_path / "ds")
    code, _, err = run_cli(capsys, "synth", "--out", "ds", "--videos", "4", "--frames", "16",
                           "--seed", "2", "--quiet")
    assert code == 1
    assert_one_line_error(err, "error: ds: holds a synth output with other settings (",
                          "seed 0 -> 2",
                          "); pass --overwrite to replace it, or choose another --out")
    assert file_tree(tmp_path / "ds") == before
    code, out, err = run_cli(capsys, "synth", "--out", "ds", "--videos", "4", "--frames", "20",
                             "--seed", "2", "--quiet", "--overwrite")
    assert code == 0, err
    assert out == "2 train + 2 test videos -> ds\n"
    meta = json.loads((tmp_path / "ds" / "synth.json").read_text())
    assert meta["complete"] is True and meta["seed"] == 2 and meta["settings"]["n_frames"] == 20
    assert (tmp_path / "ds" / "notes.txt").is_file()
    assert sorted(p.stem for p in (tmp_path / "ds" / "videos").iterdir()) == sorted(
        p.video_id for p in plan_videos(4, 20, 2, 0.5))


# --- synth: leftovers (item 18) ------------------------------------------------------------------


def test_synth_killed_then_rerun_with_fewer_videos_leaves_no_orphans(tmp_path, monkeypatch):
    real = synth_mod._render
    calls = []

    def dies_on_the_fourth(plan, root, *args):
        calls.append(plan.video_id)
        if len(calls) == 4:
            raise KeyboardInterrupt  # a kill, as far as Python can see one
        return real(plan, root, *args)

    monkeypatch.setattr(synth_mod, "_render", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(tmp_path / "ds", seed=0, **{**TINY, "n_videos": 8})
    monkeypatch.setattr(synth_mod, "_render", real)
    rendered = sorted(p.stem for p in (tmp_path / "ds" / "videos").glob("*.mp4"))
    assert set(rendered) - _ids(4)  # videos the rerun will not make
    # what a SIGKILL leaves: temporaries of dead writers (and of an older stmil's writer)
    (tmp_path / "ds" / "videos" / f".{rendered[-1]}.mp4.{DEAD}.k1ll3dxx.tmp").write_bytes(b"h")
    (tmp_path / "ds" / "videos" / f"{rendered[-1]}.mp4.tmp").write_bytes(b"half")
    (tmp_path / "ds" / f".synth.json.{DEAD}.k1ll3dxx.tmp").write_bytes(b"{")
    (tmp_path / "ds" / "videos" / "mine.txt").write_text("not synth's")

    summary = make_dataset(tmp_path / "ds", seed=0, **TINY)  # interrupted: no --overwrite
    videos = sorted(p.name for p in (tmp_path / "ds" / "videos").iterdir())
    assert videos == sorted([f"{v}.mp4" for v in _ids(4)] + ["mine.txt"])
    assert not [p for p in (tmp_path / "ds").rglob("*") if p.name.endswith(".tmp")]
    boxes = sorted(p.stem for p in (tmp_path / "ds" / "readme" / "Txt annotations").iterdir())
    assert boxes == sorted(summary.events)
    records = load_dataset(tmp_path / "ds", "all", format="crime2local")
    assert sorted(r.video_id for r in records) == sorted(_ids(4))


class _FullDisk:
    """An output container whose disk fills up at ``where``."""

    def __init__(self, real, where: str):
        self._real, self._where = real, where

    def __getattr__(self, name):
        return getattr(self._real, name)

    def _full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def mux(self, packet):
        if self._where == "mux":
            self._full()
        return self._real.mux(packet)

    def close(self):
        self._real.close()
        if self._where == "close":
            self._full()


@pytest.mark.parametrize("where", ["open", "mux", "close", "rename"])
def test_synth_on_a_full_disk_leaves_no_temporary(tmp_path, monkeypatch, where):
    real_open, real_replace = av.open, synth_write.os.replace

    def full_open(path, mode="r", **kw):
        if mode != "w":
            return real_open(path, mode, **kw)
        container = real_open(path, mode, **kw)
        if where == "open":
            container.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return _FullDisk(container, where)

    def full_replace(src, dst):
        if where == "rename" and str(dst).endswith(".mp4"):  # os is global: videos only
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(synth_write.av, "open", full_open)
    monkeypatch.setattr(synth_write.os, "replace", full_replace)
    with pytest.raises(OSError, match="No space left on device") as info:
        make_dataset(tmp_path / "ds", seed=0, **TINY)
    named = Path(info.value.filename)  # the video, never its hidden temporary file
    assert (named.parent, named.suffix) == (tmp_path / "ds" / "videos", ".mp4")
    assert not named.name.startswith(".")
    left = [p.name for p in (tmp_path / "ds").rglob("*") if p.is_file()]
    assert not [n for n in left if n.endswith(".tmp")], left
    assert sorted(left) == ["ledger.json", "synth.json"], left  # the marker (complete: false)
    assert json.loads((tmp_path / "ds" / "synth.json").read_text())["complete"] is False


def test_synth_on_a_full_disk_names_the_video(tmp_path, monkeypatch, capsys):
    """Items 18, 21 through the kernel's own error (EFBIG, as ENOSPC): one line naming the
    video being written, never its temporary file, and no temporary left."""
    monkeypatch.chdir(tmp_path)
    with limit_file_size(20_000):  # a video (~100 kB) does not fit; the marker does
        code, _, err = run_cli(capsys, "synth", "--out", "ds", "--videos", "4", "--frames", "48",
                               "--seed", "0", "--quiet")
    assert code == 1
    assert_one_line_error(err, "ds/videos/", "_x264.mp4: File too large")
    assert ".tmp" not in err
    assert sorted(p.name for p in Path("ds").rglob("*") if p.is_file()) == ["ledger.json",
                                                                           "synth.json"]


@pytest.mark.parametrize("left", [[".synth.json.{pid}.k1ll3dxx.tmp"], []])
def test_synth_after_a_kill_before_its_marker(tmp_path, left):
    """A kill while the first marker was being written leaves only its temporary: the folder
    is still synth's to use (and the dead writer's temporary goes)."""
    (tmp_path / "ds").mkdir()
    for name in left:
        (tmp_path / "ds" / name.format(pid=DEAD)).write_bytes(b"{")
    make_dataset(tmp_path / "ds", seed=0, **TINY)
    assert not [p for p in (tmp_path / "ds").rglob("*") if p.name.endswith(".tmp")]
    assert json.loads((tmp_path / "ds" / "synth.json").read_text())["complete"] is True
