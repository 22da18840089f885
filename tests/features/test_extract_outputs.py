"""What extract writes and refuses: the .npy / .json pair is one unit, the output records its
source, failures.json is merged and never a user's file, bad settings are one-line errors
before any work, feature JSON of the wrong shape is refused, a full disk names the file."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stmil.datasets import VideoRecord
from stmil.errors import ConfigError, OutputError
from stmil.features.classify import classify_video
from stmil.features.extract import (
    ExtractSettings,
    extract_many,
    read_failures,
    record_failures,
)
from stmil.features.store import (
    FeatureError,
    is_done,
    load_dataset_features,
    load_features,
    read_feature_meta,
    write_features,
)
from tests.conftest import (
    assert_one_line_error,
    dead_pid,
    limit_file_size,
    log_lines,
    ramp_frames,
    run_cli,
    write_video,
)

# ---- extraction: shared fixtures ---------------------------------------------------------

SMALL = dict(size=112)  # Mixed_4e map 7x7, the smallest a 7x7 grid fits; 49 cuboids of 528


@pytest.fixture()
def video(tmp_path):
    """One 20-frame video (one 16-frame clip) in ``videos/``, and the output folder path."""
    src = tmp_path / "videos"
    src.mkdir()
    return write_video(src / "v.mkv", ramp_frames(20, h=32, w=32), fps=30), tmp_path / "out"


def _extract(inputs, out, extractor, overwrite=False, **settings):
    return extract_many(inputs, out, extractor, ExtractSettings(**(SMALL | settings)),
                        overwrite=overwrite, progress=False)


# ---- item 3: the .npy / .json pair is one unit -------------------------------------------

def _other_array(npy: Path) -> np.ndarray:
    """An array of the same shape and dtype as ``npy`` holds (what other settings give)."""
    return (np.load(npy).astype(np.float32) * 2 + 1).astype(np.float16)


@pytest.mark.parametrize("renamed", [0, 1])  # none; the new JSON
def test_a_kill_between_the_two_renames_is_detected_and_redone(video, extractor, monkeypatch,
                                                               renamed):
    """The group appends its ledger journal line, then renames the JSON, then the array: a
    kill before the renames leaves the old pair (whole: skipped), after the first a new JSON
    over the old array (not done, still stmil's through the ledger's ``previous`` entry: a
    plain rerun redoes it)."""
    path, out = video
    _extract([path], out, extractor)
    npy, meta_path = out / "v.npy", out / "v.json"
    good = {p: p.read_bytes() for p in (npy, meta_path)}
    meta = json.loads(meta_path.read_text())
    assert meta["npy_bytes"] == len(good[npy])
    assert meta["npy_sha256"] == hashlib.sha256(good[npy]).hexdigest()
    real, done = os.replace, []

    def replace(a, b):
        if len(done) == renamed:
            raise KeyboardInterrupt  # as a kill: nothing after it runs
        done.append(b)
        real(a, b)
    monkeypatch.setattr("stmil.atomic.os.replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_features(out, "v", _other_array(npy),  # same shape: only sums tell
                       read_feature_meta(meta_path))
    monkeypatch.undo()
    assert npy.read_bytes() == good[npy]
    assert is_done(out, "v") == (renamed == 0)
    if renamed == 1:
        with pytest.raises(FeatureError, match=re.escape(
                f"{npy}: does not match v.json (its sha256 differs from the one its metadata")):
            load_features(out, "v")
    s = _extract([path], out, extractor)  # a plain rerun, no --overwrite
    assert (s.done, s.skipped, s.failed) == ((["v"], []) if renamed == 1 else ([], ["v"])) + ([],)
    assert {p: p.read_bytes() for p in good} == good


# ---- item 4 and 22: the output records its source; a different source is an error --------

def test_features_record_the_resolved_source_and_refuse_another_file(video, extractor,
                                                                     monkeypatch, caplog):
    path, out = video
    monkeypatch.chdir(path.parent.parent)
    s = _extract([Path("videos/v.mkv")], Path("out"), extractor)
    assert s.done == ["v"]
    meta = json.loads((out / "v.json").read_text())
    st = path.stat()
    assert (meta["source"], meta["source_bytes"], meta["source_mtime_ns"]) == (
        str(path.resolve()), st.st_size, st.st_mtime_ns)
    before = (out / "v.npy").read_bytes()

    Path("b").mkdir()
    other = write_video(Path("b/v.mkv"), ramp_frames(20, h=32, w=32, seed=5), fps=30)
    caplog.clear()
    s = _extract([Path("b/v.mkv")], Path("out"), extractor)
    assert (s.done, s.skipped) == ([], [])
    assert s.failed == [{"path": str(other.resolve()), "error":
                         f"the finished features out/v.json were made from {path.resolve()}, "
                         f"not {other.resolve()}; pass --overwrite to replace them, or use "
                         "another output folder"}]
    assert log_lines(caplog) == [f"error: b/v.mkv: {s.failed[0]['error']}"]
    assert (out / "v.npy").read_bytes() == before

    s = _extract([Path("videos/v.mkv")], Path("out"), extractor)  # the same file: skipped
    assert (s.skipped, s.failed) == (["v"], [])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the video was edited
    s = _extract([Path("videos/v.mkv")], Path("out"), extractor)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(st.st_mtime_ns // 10**9))
    later = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(st.st_mtime_ns // 10**9 + 1))
    assert s.failed[0]["error"] == (
        f"the finished features out/v.json were made from {path.resolve()} when its "
        f"modification time was {when}.{st.st_mtime_ns % 10**9:09d} UTC; it is now "
        f"{later}.{st.st_mtime_ns % 10**9:09d} UTC; pass --overwrite to replace them, or use "
        "another output folder")
    with open(path, "ab") as f:  # same time, another size
        f.write(b"\0")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    s = _extract([Path("videos/v.mkv")], Path("out"), extractor)
    assert f"when its size was {st.st_size} bytes; it is now {st.st_size + 1} bytes; " in (
        s.failed[0]["error"])
    s = _extract([Path("b/v.mkv")], Path("out"), extractor, overwrite=True)
    assert s.done == ["v"] and json.loads((out / "v.json").read_text())["source"] == str(
        other.resolve())


# ---- item 8 and 21: failures.json is merged, never lost, and keeps paths intact -----------

def test_failures_are_merged_across_runs_and_keep_paths_with_colons(video, extractor,
                                                                   monkeypatch, caplog):
    path, out = video
    monkeypatch.chdir(path.parent.parent)
    bad = Path("videos/a: b.mp4")  # ": " inside a path
    bad.write_text("not a video\n")
    s = _extract([Path("videos"), Path("gone.mp4")], Path("out"), extractor)
    first = [{"path": str(Path("gone.mp4").resolve()), "error": "no such file or folder"},
             {"path": str(bad.resolve()), "error": s.failed[1]["error"]}]
    assert s.failed == first and s.failed[1]["error"].startswith("not a readable video (")
    assert read_failures(out / "failures.json") == first
    assert log_lines(caplog) == ["error: gone.mp4: no such file or folder",
                      f"error: videos/a: b.mp4: {first[1]['error']}"]

    s = _extract([Path("videos/v.mkv")], Path("out"), extractor)  # a later, clean run
    assert (s.skipped, s.failed) == (["v"], [])
    assert read_failures(out / "failures.json") == first  # not deleted

    bad.unlink()
    write_video(Path("videos/a: b.mkv"), ramp_frames(20, h=32, w=32), fps=30)
    Path("a").mkdir()
    write_video(Path("a/v.mkv"), ramp_frames(20, h=32, w=32, seed=3), fps=30)
    s = _extract([Path("videos/a: b.mkv"), Path("a/v.mkv")], Path("out"), extractor)
    assert s.done == ["a: b"] and [f["path"] for f in s.failed] == [str(Path("a/v.mkv").resolve())]
    assert read_failures(out / "failures.json") == first + s.failed  # merged, in order

    s = _extract([Path("gone.mp4"), Path("a/v.mkv")], Path("out"), extractor)
    assert [f["path"] for f in read_failures(out / "failures.json")] == [
        str(bad.resolve()), str(Path("gone.mp4").resolve()), str(Path("a/v.mkv").resolve())]
    record_failures(Path("out"), [bad, Path("gone.mp4"), Path("a/v.mkv")], [])
    assert not (out / "failures.json").exists()  # nothing left: the file goes


def test_record_failures_waits_for_a_concurrent_run(tmp_path):
    """The read-merge-write runs under the folder's lock, so no run loses another's entries."""
    (tmp_path / "failures.json").write_text(json.dumps([{"path": "/x", "error": "e1"}]))
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds the lock
    mine = [{"path": "/y", "error": "e2"}]
    worker = threading.Thread(target=record_failures, args=(tmp_path, ["/y"], mine))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive()  # waiting for the lock
    (tmp_path / "failures.json").write_text(json.dumps([{"path": "/x", "error": "e1"},
                                                        {"path": "/z", "error": "e3"}]))
    os.close(fd)  # the other run is done; its entry /z must survive
    worker.join(10)
    assert read_failures(tmp_path / "failures.json") == [
        {"path": "/x", "error": "e1"}, {"path": "/z", "error": "e3"}, *mine]


@pytest.mark.parametrize("content", ['[1]', '{"path": "/x"}', '[{"path": 1, "error": "e"}]',
                                     '{', b'\xff\xfe'])
def test_a_foreign_failures_json_is_never_overwritten(video, extractor, content):
    path, out = video
    out.mkdir()
    f = out / "failures.json"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(OutputError, match=f"{re.escape(str(f))}: not a stmil failure list"):
        _extract([path], out, extractor)
    assert f.read_bytes() == (content if isinstance(content, bytes) else content.encode())
    assert sorted(p.name for p in out.iterdir()) == ["failures.json"]


# ---- item 15, 16, 20: bad numbers are one-line errors before anything runs ----------------

@pytest.mark.parametrize("flag, value, message", [
    ("--fps", "1e-320", "fps must be a number from 0.01 to 1000 frames per second"),
    ("--fps", "inf", "fps must be a number from 0.01 to 1000 frames per second"),
    ("--fps", "nan", "fps must be a number from 0.01 to 1000 frames per second"),
    ("--fps", "0", "fps must be a number from 0.01 to 1000 frames per second"),
    ("--fps", "-5", "fps must be a number from 0.01 to 1000 frames per second"),
    ("--fps", "1e6", "fps must be a number from 0.01 to 1000 frames per second"),
    ("--grid", "0", "--grid must be a whole number from 1 to 1024, got 0"),
    ("--grid", "-3", "--grid must be a whole number from 1 to 1024, got -3"),
    ("--clip-len", "0", "--clip-len must be a whole number from 1 to 10000, got 0"),
    ("--stride", "-1", "--stride must be a whole number from 1 to 10000, got -1"),
    ("--size", "0", "--size must be a whole number from 1 to 1024 pixels, got 0"),
    ("--batch-size", "0", "--batch-size must be a whole number from 1 to 4096, got 0"),
    ("--endpoint", "Mixed_9z", "unknown endpoint 'Mixed_9z'; choose one of Conv3d_1a_7x7"),
    ("--endpoint", "Logits", "cuboid features need a feature-map endpoint, not Logits"),
])
def test_extract_bad_numbers_are_one_line_errors_before_any_video(capsys, tmp_path,
                                                                  monkeypatch, flag, value,
                                                                  message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "extract", "missing.mp4", "--out", "out", flag, value,
                             "--quiet", "--device", "cpu")
    assert (code, out) == (1, "")
    assert_one_line_error(err, message)
    assert not Path("out").exists()  # nothing written, no video looked at


@pytest.mark.parametrize("grid, size, ok", [(64, 64, True), (65, 64, False), (300, 224, False)])
def test_grid_must_fit_the_frame(grid, size, ok):
    s = ExtractSettings(size=size)
    if ok:
        s.check_grid(grid)
    else:
        with pytest.raises(ConfigError, match=f"grid {grid} is larger than the frame size "
                                              f"{size}: each cuboid needs at least one pixel; "
                                              f"use --grid {size} or less"):
            s.check_grid(grid)


@pytest.mark.parametrize("bad", [{"fps": float("inf")}, {"fps": float("nan")}, {"fps": 1e-320},
                                 {"stride": 2.5}, {"clip_len": True}, {"tail": "wrap"}])
def test_extract_settings_refuse_bad_values(bad):
    with pytest.raises(ConfigError, match=f"^{next(iter(bad))} must be"):
        ExtractSettings(**bad)


@pytest.mark.parametrize("top", [-2, 0, 401, 1000])
def test_classify_top_is_checked_before_the_network(capsys, tmp_path, monkeypatch, top):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "classify", "missing.mp4", "--top", top, "--device", "cpu")
    assert code == 1
    assert_one_line_error(err, f"--top must be a whole number from 1 to 400, got {top}")
    with pytest.raises(ConfigError, match="window must be at least 9 frames"):
        classify_video("missing.mp4", window=8)


# ---- item 17: a feature .json of the wrong shape is one line naming the file -------------

GOOD_META = {"source": "/v.mp4", "fps": 30.0, "source_fps": 30.0, "n_frames": 16, "width": 32,
             "height": 32, "clip_len": 16, "stride": 16, "size": 64, "grid": 7,
             "endpoint": "Mixed_4e", "tail": "drop", "n_clips": 1, "channels": 528}
WRONG_SHAPES = [
    (b"[1]", "not a feature metadata file: a JSON object is expected, got list"),
    (b"1", "not a feature metadata file: a JSON object is expected, got int"),
    (b"{", "not a feature metadata file: not valid JSON"),
    (b"\xff\xfe{}", "not a feature metadata file: not valid JSON"),
    (b"{}", "not a feature metadata file: missing fps, n_frames"),
    (json.dumps({k: v for k, v in GOOD_META.items() if k != "n_clips"}).encode(),
     "not a feature metadata file: missing n_clips"),
    (json.dumps(GOOD_META | {"grid": "x"}).encode(), "grid must be a whole number >= 1, got 'x'"),
    (json.dumps(GOOD_META | {"grid": 0}).encode(), "grid must be a whole number >= 1, got 0"),
    (json.dumps(GOOD_META | {"n_clips": True}).encode(),
     "n_clips must be a whole number >= 1, got True"),
    (json.dumps(GOOD_META | {"fps": float("nan")}).encode(),
     "fps must be a number > 0, got nan"),
    (json.dumps(GOOD_META | {"tail": None}).encode(), "tail must be one of drop, pad, got None"),
    (json.dumps(GOOD_META | {"source": 3}).encode(), "source must be a path, got 3"),
    (json.dumps(GOOD_META | {"npy_sha256": "abc"}).encode(),
     "npy_sha256 must be 64 lowercase hex digits, got 'abc'"),
]


@pytest.mark.parametrize("content, message", WRONG_SHAPES)
def test_wrong_shape_feature_json_is_a_feature_error_everywhere(tmp_path, monkeypatch,
                                                                content, message):
    monkeypatch.chdir(tmp_path)
    feats = Path("feats")
    feats.mkdir()
    (feats / "v.json").write_bytes(content)
    np.save(feats / "v.npy", np.zeros((1, 49, 528), np.float16))
    where = re.escape(f"feats/v.json: {message}")
    with pytest.raises(FeatureError, match=where):
        read_feature_meta(feats / "v.json")
    with pytest.raises(FeatureError, match=where):
        is_done(feats, "v")
    with pytest.raises(FeatureError, match=where):
        load_features(feats, "v")
    with pytest.raises(FeatureError, match=where):
        load_dataset_features([VideoRecord("v", 0)], feats)


def test_wrong_shape_feature_json_in_extract_is_a_per_video_failure(video, extractor, caplog):
    path, out = video
    out.mkdir()
    (out / "v.json").write_text("[1]")
    s = _extract([path], out, extractor)
    assert log_lines(caplog) == [f"error: {path}: {s.failed[0]['error']}"]
    assert s.failed == [{"path": str(path), "error": f"{out}/v.json: not a feature metadata "
                         "file: a JSON object is expected, got list; move it away, or use "
                         "another output folder (stmil replaces only its own features)"}]
    assert (out / "v.json").read_text() == "[1]" and not (out / "v.npy").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_array_without_its_json_is_not_overwritten(video, extractor, overwrite):
    path, out = video
    out.mkdir()
    np.save(out / "v.npy", np.ones(3))
    s = _extract([path], out, extractor, overwrite=overwrite)
    assert s.failed == [{"path": str(path), "error": f"{out}/v.npy: exists without v.json, so "
                         "it is not features stmil wrote; move it away, or use another output "
                         "folder (stmil replaces only its own features)"}]
    np.testing.assert_array_equal(np.load(out / "v.npy"), np.ones(3))


@pytest.mark.parametrize("name,content", [("config.json", b'{"my": "settings"}\n'),
                                          ("config.json", b"[1]"),
                                          ("config.npy", b"my own array")])
def test_overwrite_replaces_only_stmils_own_features(tmp_path, monkeypatch, capsys, extractor,
                                                     name, content):
    """``--overwrite`` redoes stmil's feature files; a user's ``config.json`` (or ``.npy``) in
    the output folder, named like a video's id, is refused and kept, as without it."""
    monkeypatch.chdir(tmp_path)
    Path("videos").mkdir()
    write_video(Path("videos/config.mkv"), ramp_frames(20, h=32, w=32), fps=30)
    Path("out").mkdir()
    Path("out", name).write_bytes(content)
    code, _, err = run_cli(capsys, "extract", "videos", "--out", "out", "--overwrite",
                           "--size", "32", "--grid", "2", "--quiet")
    assert code == 1
    assert f"error: videos/config.mkv: out/{name}: " in err
    assert err.splitlines()[0].endswith("; move it away, or use another output folder (stmil "
                                        "replaces only its own features)")
    assert Path("out", name).read_bytes() == content
    assert sorted(os.listdir("out")) == sorted([name, "failures.json", ".stmil"])


# ---- item 18: extract removes the temporary files of killed runs -------------------------

def test_extract_removes_stale_temps_of_killed_runs(video, extractor):
    path, out = video
    out.mkdir()
    dead = dead_pid()
    stale = out / f".v.npy.{dead}.abcdefgh.tmp"
    live = out / f".w.npy.{os.getpid()}.abcdefgh.tmp"
    foreign = out / ".v.npy.tmp"
    for p in (stale, live, foreign):
        p.write_text("partial")
    s = _extract([path], out, extractor)
    assert s.done == ["v"]
    assert sorted(p.name for p in out.iterdir()) == sorted([live.name, foreign.name, "v.npy",
                                                            "v.json", ".stmil"])


# ---- item 21: a full disk is one line naming the output file ------------------------------

def test_extract_on_a_full_disk_names_the_output_file(video, capsys, monkeypatch):
    path, out = video
    monkeypatch.chdir(path.parent.parent)
    with limit_file_size(20_000):  # the array (~52 kB) does not fit; failures.json does
        code, stdout, err = run_cli(capsys, "extract", "videos/v.mkv", "--out", "out", "--size",
                                    "112", "--quiet", "--device", "cpu")
    assert code == 1 and "0 done, 0 skipped, 1 failed" in stdout
    assert err.splitlines()[0] == "error: videos/v.mkv: out/v.npy: File too large"
    assert read_failures(out / "failures.json") == [
        {"path": str(path), "error": "out/v.npy: File too large"}]
    assert sorted(p.name for p in out.iterdir()) == [".stmil", "failures.json"]  # no half pair


# ---- item 22: empty input folder, missing features folder ---------------------------------

def test_extract_of_an_empty_folder_says_no_videos_found(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("empty").mkdir()
    Path("empty/notes.txt").write_text("no video here")
    code, stdout, err = run_cli(capsys, "extract", "empty", "--out", "out", "--size", "112",
                                "--quiet", "--device", "cpu")
    assert code == 1 and "0 done, 0 skipped, 1 failed" in stdout
    assert err.splitlines()[0].startswith("error: no videos found in empty (looked for .mp4, ")


@pytest.mark.parametrize("make", [None, "file"])
def test_a_missing_features_folder_is_named(tmp_path, monkeypatch, make):
    monkeypatch.chdir(tmp_path)
    if make:
        Path("feats").write_text("")
    message = ("feats: no such features folder" if make is None else "feats: not a folder")
    with pytest.raises(FeatureError, match=f"^{message}"):
        load_dataset_features([VideoRecord("a", 1), VideoRecord("b", 0)], "feats")
