"""Regression tests for the failures found by ``benchmarks/fuzz.py`` (issue 22, "A fuzzer of our
own"), each the fuzzer's case cut down to what triggers it, replayed through ``stmil.cli.main``.

Each test names its fuzzer case (``python benchmarks/fuzz.py --replay SEED:INDEX`` replays the
original). A test marked ``xfail(strict=True)`` fails on the tree it was written against; its
owner removes the mark with the fix. The rule every test checks is the one of DESIGN.md: a user's
mistake or a damaged input is one ``error:`` line and a non-zero exit, never a traceback, and a
file the run does not own keeps its bytes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_video
from tests.planted import make_planted

TINY_TRAIN = ["--iterations", "3", "--batch-anomalous", "1", "--batch-normal", "1",
              "--hidden", "8", "--mid", "4", "--checkpoint-every", "2", "--device", "cpu",
              "--quiet"]


def xfail(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


def call(capsys, *argv) -> tuple[int | None, str, str, BaseException | None]:
    """``stmil.cli.main(argv)``: (exit code, stdout, stderr, the exception that escaped)."""
    from stmil.cli import main

    try:
        code, exc = main([str(a) for a in argv]), None
    except SystemExit as e:  # argparse
        code, exc = e.code, None
    except BaseException as e:  # noqa: BLE001 - what these tests look for
        code, exc = None, e
    out, err = capsys.readouterr()
    return code, out, err, exc


def assert_clean_failure(result) -> None:
    """A non-zero exit with an ``error:`` line, and no traceback."""
    code, _, err, exc = result
    assert exc is None, f"{type(exc).__name__}: {exc}"
    assert "Traceback" not in err
    assert code not in (0, None), err
    assert any(line.startswith("error:") for line in err.splitlines()), err


def assert_no_traceback(result) -> None:
    """Success, or a clean failure: never an escaped exception."""
    code, _, err, exc = result
    assert exc is None, f"{type(exc).__name__}: {exc}"
    assert "Traceback" not in err
    if code != 0:
        assert_clean_failure(result)


# ----------------------------------------------------------------------------- workspaces

@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The fuzzer's workspace, smaller: 4 synth videos of 32 frames, their features at
    ``--size 64 --grid 2``, a 3-iteration run, a calibrated copy and one scores file."""
    from stmil.cli import main

    root = tmp_path_factory.mktemp("fuzzws")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for argv in (
            ["synth", "--out", "synth", "--videos", "4", "--frames", "32", "--seed", "0",
             "--quiet"],
            ["extract", "synth/videos", "--out", "feats", "--size", "64", "--grid", "2",
             "--device", "cpu", "--workers", "0", "--quiet"],
            ["train", "--data", "synth", "--features", "feats", "--out", "run", *TINY_TRAIN],
            ["score", "feats/Fire001_x264.npy", "--model", "run", "--out", "scores",
             "--device", "cpu", "--quiet"],
        ):
            assert main(argv) == 0, argv
        shutil.copytree("run", "run_cal")
        main(["calibrate", "run_cal", "--data", "synth", "--features", "feats", "--quiet"])
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture()
def case(ws, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the workspace as the working folder."""
    for name in ("synth", "feats", "run", "run_cal", "scores"):
        shutil.copytree(ws / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def planted(tmp_path, monkeypatch) -> tuple[str, str]:
    """A planted dataset ``data/`` and features ``feats/`` (no I3D) in the working folder."""
    monkeypatch.chdir(tmp_path)
    make_planted(Path("data"), Path("feats"), n_train=4, n_test=2, n_clips=4, channels=8)
    return "data", "feats"


def nested_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


# ----------------------------------------------------------------------------- tracebacks

def test_score_overlay_of_a_narrow_video(case, capsys):
    """fuzz 0:23, 0:631, 0:3896: libx264 refused the 320x19200 panel of an 8x480 video and
    av.error.ExternalError escaped; a very tall panel is now narrowed (overlay.MAX_PANEL_H) and an
    encoder refusal is one line."""
    rng = np.random.default_rng(0)
    write_video(Path("narrow.mkv"), rng.integers(0, 255, (20, 480, 8, 3), dtype=np.uint8))
    assert_no_traceback(call(capsys, "score", "narrow.mkv", "--model", "run", "--out", "out",
                             "--overlay", "--device", "cpu", "--workers", "0", "--quiet"))


def test_events_on_a_deeply_nested_scores_file(case, capsys):
    """fuzz 0:730, 0:1067, 0:4709: a scores file of 100000 nested lists: RecursionError escaped
    read_scores (score.py) in events; stmil.safejson.loads makes it "not valid JSON"."""
    Path("scores/Fire001_x264.scores.json").write_text(nested_json())
    assert_clean_failure(call(capsys, "events", "scores/Fire001_x264.scores.json", "--model",
                              "run_cal", "--out", "ev.jsonl", "--device", "cpu", "--quiet"))


@pytest.mark.parametrize("name, argv", [
    ("run_cal/calibration.json", ["events", "scores/Fire001_x264.scores.json", "--model",
                                  "run_cal", "--out", "ev.jsonl", "--device", "cpu"]),
    ("run/metrics.json", ["evaluate", "--compare", "run"]),
    ("feats/failures.json", ["extract", "synth/videos", "--out", "feats", "--size", "64",
                             "--grid", "2", "--device", "cpu", "--workers", "0"]),
], ids=["calibration", "metrics", "failures"])
def test_other_deeply_nested_json_files(case, capsys, name, argv):
    """fuzz 1:1612 (this session's smoke): a calibration.json of 100000 nested lists:
    RecursionError escaped read_calibration, which called json.loads itself; every reader now
    goes through stmil.safejson (tests/test_architecture.py holds the rule)."""
    Path(name).write_text(nested_json())
    assert_clean_failure(call(capsys, *argv, "--quiet"))


def test_a_deeply_nested_folder_annotations_file(tmp_path):
    from stmil.datasets import DatasetError
    from stmil.datasets.folder import read_annotations

    path = tmp_path / "annotations.json"
    path.write_text(nested_json())
    with pytest.raises(DatasetError, match="annotations.json: not valid JSON: nested too deeply"):
        read_annotations(path)


@pytest.mark.parametrize("vid,argv", [
    ("Normal_Videos_002_x264", ["calibrate", "run", "--data", "synth", "--features", "feats"]),
    ("Normal_Videos_001_x264", ["score", "feats/Normal_Videos_001_x264.npy", "--model", "run",
                                "--out", "out", "--device", "cpu"]),
    ("Normal_Videos_001_x264", ["export", "--data", "synth", "--features", "feats", "--model",
                                "run", "--out", "out"]),
], ids=["calibrate", "score", "export"])
def test_a_deeply_nested_feature_json(case, capsys, vid, argv):
    """fuzz 0:1123, 0:4156, 0:2293 (RecursionError from read_feature_meta; fixed in store.py
    while the fuzzer ran: kept as a regression test)."""
    Path(f"feats/{vid}.json").write_text(nested_json())
    assert_clean_failure(call(capsys, *argv, "--quiet"))


@pytest.mark.parametrize("command", ["extract", "score"])
def test_a_symlink_loop_in_an_input_folder(case, capsys, command):
    """fuzz 0:1016, 0:1775 (extract), 0:1863, 0:3263 (score): RuntimeError('Symlink loop')
    escaped Path.resolve in store.source_identity (issue 22 item 8)."""
    Path("in").mkdir()
    os.symlink("loop2.mp4", "in/loop1.mp4")
    os.symlink("loop1.mp4", "in/loop2.mp4")
    argv = (["extract", "in", "--out", "out", "--size", "64", "--grid", "2"]
            if command == "extract" else ["score", "in", "--model", "run", "--out", "out"])
    assert_clean_failure(call(capsys, *argv, "--device", "cpu", "--workers", "0", "--quiet"))


def test_evaluate_on_a_test_split_of_one_class(case, capsys):
    """fuzz 0:1052, 0:2890, 0:2944, 0:3196: the test split's only anomalous video loses its box
    file (taken as normal): ValueError('only one class is present') escaped the metrics; frame
    AUC and AP are now null with a warning."""
    Path("synth/readme/Txt annotations/Fire001_x264.txt").unlink()
    assert_no_traceback(call(capsys, "evaluate", "--data", "synth", "--features", "feats",
                             "--model", "run", "--json", "m.json", "--quiet"))


@pytest.mark.parametrize("command", ["extract", "classify"])
def test_a_video_of_an_unknown_codec(case, capsys, command):
    """fuzz 0:1325, 0:561 (extract), 0:7376 (classify): a Matroska codec id FFmpeg does not know
    (V_FFV1 -> V_FFV0) leaves the stream without a codec context: AttributeError escaped probe."""
    rng = np.random.default_rng(0)
    write_video(Path("v.mkv"), rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8))
    data = Path("v.mkv").read_bytes()
    assert b"V_FFV1" in data
    Path("v.mkv").write_bytes(data.replace(b"V_FFV1", b"V_FFV0", 1))
    argv = (["extract", "v.mkv", "--out", "out", "--size", "64", "--grid", "2", "--workers", "0"]
            if command == "extract" else ["classify", "v.mkv"])
    assert_clean_failure(call(capsys, *argv, "--device", "cpu", "--quiet"))


def test_extract_a_video_with_non_utf8_stream_metadata(case, capsys):
    """fuzz 0:3966, 0:6539: stream metadata (the Matroska DURATION tag) that is not UTF-8:
    UnicodeDecodeError escaped PyAV's stream wrapping in extract."""
    rng = np.random.default_rng(0)
    write_video(Path("v.mkv"), rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8))
    data = bytearray(Path("v.mkv").read_bytes())
    i = data.index(b"00:00:00.")  # the stream's DURATION tag, a metadata string
    data[i + 10] |= 0x80
    Path("v.mkv").write_bytes(bytes(data))
    assert_clean_failure(call(capsys, "extract", "v.mkv", "--out", "out", "--size", "64",
                              "--grid", "2", "--device", "cpu", "--workers", "0", "--quiet"))


def test_score_a_video_with_non_utf8_container_metadata(case, capsys):
    """fuzz 0:8082: MP4 ftyp brands that are not UTF-8 (one bit of byte 18): UnicodeDecodeError
    escaped av.open in score."""
    data = bytearray(Path("synth/videos/Vandalism001_x264.mp4").read_bytes())
    assert data[4:8] == b"ftyp"
    data[18] ^= 0x80
    Path("v.mp4").write_bytes(bytes(data))
    assert_clean_failure(call(capsys, "score", "v.mp4", "--model", "run", "--out", "out",
                              "--device", "cpu", "--workers", "0", "--quiet"))


def test_extract_an_absurd_size(case, capsys):
    """fuzz 0:4048: --size 1000000000000 was accepted and torch's RuntimeError ('Storage size
    calculation overflowed') escaped resize_frames; size is now at most 1024."""
    assert_clean_failure(call(capsys, "extract", "synth/videos/Fire001_x264.mp4", "--out", "out",
                              "--size", "1000000000000", "--grid", "2", "--device", "cpu",
                              "--workers", "0", "--quiet"))


def test_export_with_an_absurd_source_fps(case, capsys):
    """fuzz 0:4161: source_fps 1e12 passed the reader and ValueError('clip ranges must satisfy
    ...') escaped timeline.frame_scores_from_clips in export; FeatureMeta now refuses clips that
    do not fit the video."""
    import json

    p = Path("feats/Fire001_x264.json")
    meta = json.loads(p.read_text())
    meta["source_fps"] = 10 ** 12
    p.write_text(json.dumps(meta))
    assert_no_traceback(call(capsys, "export", "--data", "synth", "--features", "feats",
                             "--model", "run", "--out", "out", "--quiet"))


@pytest.mark.parametrize("command", ["calibrate", "train"])
def test_a_deeply_nested_ledger(case, capsys, command):
    """fuzz 0:1252 (calibrate), 0:1792, 0:3075, 0:7563 (train --resume): a run folder's ledger
    .stmil/ledger.json of 100000 nested lists: RecursionError escaped the ledger reader
    (ownership.py)."""
    Path("run/.stmil/ledger.json").write_text(nested_json())
    argv = (["calibrate", "run", "--data", "synth", "--features", "feats"]
            if command == "calibrate" else
            ["train", "--data", "synth", "--features", "feats", "--out", "run", *TINY_TRAIN,
             "--iterations", "6", "--resume"])
    assert_clean_failure(call(capsys, *argv, "--quiet"))


def test_train_config_with_a_huge_integer_weight(planted, capsys):
    """fuzz 0:7904: 'lambda_tv: 99999999999999999999' in a train --config (a YAML int) was
    accepted and OverflowError escaped weak_loss; loss weights are now at most
    mil.config.WEIGHT_MAX."""
    data, feats = planted
    Path("cfg.yaml").write_text(f"data: {data}\nfeatures: {feats}\nout: run\n"
                                "lambda_tv: 99999999999999999999\n")
    assert_no_traceback(call(capsys, "train", "--config", "cfg.yaml", *TINY_TRAIN))


# import-features -------------------------------------------------------------------------

@pytest.fixture()
def rtfm(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Path("rtfm").mkdir()
    rng = np.random.default_rng(0)
    for vid in ("a", "b"):
        np.save(f"rtfm/{vid}_i3d.npy", rng.random((3, 10, 16), np.float32))
    Path("rtfm.list").write_text("rtfm/a_i3d.npy\nrtfm/b_i3d.npy\n")
    return tmp_path


def test_import_a_binary_list_file(rtfm, capsys):
    """fuzz 0:2171, 0:2194, 0:5000: a binary .list file: UnicodeDecodeError escaped read_list
    (interop/import_features.py)."""
    Path("rtfm.list").write_bytes(b"\xff\xfe\x00" + bytes(range(256)))
    assert_clean_failure(call(capsys, "import-features", "rtfm.list", "--format", "rtfm",
                              "--out", "out", "--quiet"))


def test_import_a_string_npy(rtfm, capsys):
    """fuzz 0:2183, 0:2307: a feature .npy of strings (<U3): TypeError escaped the crop mean in
    video_array (interop/import_features.py)."""
    np.save("rtfm/b_i3d.npy", np.full((3, 10, 16), "0.5", dtype="<U3"))
    assert_no_traceback(call(capsys, "import-features", "rtfm.list", "--format", "rtfm",
                             "--out", "out", "--quiet"))


def test_import_an_npy_with_a_broken_header(rtfm, capsys):
    """fuzz 0:3772: a .npy whose header dict is cut (zeroed bytes): tokenize.TokenError escaped
    np.load in import-features."""
    p = Path("rtfm/b_i3d.npy")
    data = bytearray(p.read_bytes())
    data[47:120] = bytes(73)  # inside the header dict, past its opening brace
    p.write_bytes(bytes(data))
    assert_no_traceback(call(capsys, "import-features", "rtfm.list", "--format", "rtfm",
                             "--out", "out", "--quiet"))


# ----------------------------------------------------------------------------- files not owned

@pytest.mark.parametrize("names", [[".stmil-run"], [".stmil-run", "history.csv"],
                                   [".stmil-run", "model.safetensors"],
                                   [".stmil-run", "checkpoint.pt"]],
                         ids=["marker", "history", "model", "checkpoint"])
def test_train_keeps_a_users_files_with_stmil_names(planted, capsys, names):
    """fuzz 0:317, 0:1918, 0:3138, 0:4868, 0:4916: train --out into a folder holding a user's
    '.stmil-run' (and history.csv, model.safetensors, checkpoint.pt) replaced or deleted them
    (issue 22 item 1); the legacy check now adopts only a marker of the content train writes."""
    data, feats = planted
    out = Path("out")
    out.mkdir()
    for name in names:
        (out / name).write_bytes(b"user data\n")
    call(capsys, "train", "--data", data, "--features", feats, "--out", "out", *TINY_TRAIN)
    for name in names:
        assert (out / name).exists(), f"{name} was deleted"
        assert (out / name).read_bytes() == b"user data\n", f"{name} was replaced"


@pytest.mark.parametrize("content", [
    b"user data\n",
    b"",  # fuzz 0:196, 0:623, 0:1666, 0:1778, 0:2366, 0:3463, 0:4052 (issue 22 item 7)
], ids=["text", "empty"])
def test_events_out_keeps_a_users_file(case, capsys, content):
    """A user's file at ``events --out`` keeps its bytes (issue 22 item 5; the non-empty case
    was fixed by 764eeca while the fuzzer ran)."""
    Path("ev.jsonl").write_bytes(content)
    call(capsys, "events", "scores/Fire001_x264.scores.json", "--model", "run_cal", "--out",
         "ev.jsonl", "--device", "cpu", "--quiet")
    assert Path("ev.jsonl").read_bytes() == content
