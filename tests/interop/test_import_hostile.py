"""Hostile inputs of ``stmil import-features`` (issue 22 items 9, 10 and 12): each is one
line naming the file, the other videos of the batch are imported, and a frame count is bounded
by the snippets it places."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stmil.errors import ConfigError
from stmil.features.store import load_features
from stmil.interop.import_features import ImportSettings, import_features, read_frame_counts
from tests.conftest import assert_one_line_error, run_cli


def test_a_zero_byte_npy_is_one_error_and_the_import_carries_on(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("in/Abuse001_x264.npy").write_bytes(b"")
    np.save("in/Arson002_x264.npy", np.ones((3, 4), np.float32))
    code, out, err = run_cli(capsys, "import-features", "in", "--format", "rtfm", "--out", "f",
                             "--quiet")
    assert code == 1 and "1 imported, 1 failed" in out
    assert_one_line_error(err, "Abuse001_x264.npy: not a NumPy array file")
    assert load_features("f", "Arson002_x264")[0].shape == (3, 1, 4)
    assert not Path("f/Abuse001_x264.npy").exists()


def test_a_binary_frame_counts_file_is_one_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    np.save("in/Abuse001_x264.npy", np.ones((3, 4), np.float32))
    Path("counts.bin").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01")
    code, out, err = run_cli(capsys, "import-features", "in", "--format", "rtfm",
                             "--frame-counts", "counts.bin", "--out", "f")
    assert code == 1 and out == ""
    assert_one_line_error(err, "counts.bin: not a text file of '<video> <n_frames>' lines",
                          "--frame-counts")
    assert not Path("f").exists()


@pytest.mark.parametrize("n_frames, ok", [
    (10**12, False),  # the reported case: 12 snippets, then 931 GiB in gt and evaluate
    (12 * 16 + 16, False),  # one snippet more would start here
    (12 * 16 + 15, True),  # a partial 13th snippet that the features dropped
    (11 * 16 + 1, True),
    (11 * 16, False),  # the 12th snippet would have no frame
])
def test_a_frame_count_is_bounded_by_the_snippets(tmp_path, n_frames, ok):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "Abuse001_x264.npy", np.ones((12, 4), np.float32))
    s = import_features([tmp_path / "in"], tmp_path / "f", ImportSettings("rtfm"),
                        frame_counts={"Abuse001_x264": n_frames})
    if ok:
        assert s.written == ["Abuse001_x264"]
        assert load_features(tmp_path / "f", "Abuse001_x264")[1].n_frames == n_frames
    else:
        (vid, reason), = s.failed
        assert vid == "Abuse001_x264" and "12 snippets of 16 frames cover 177 to 207 frames" \
            in reason and f"gives its video {n_frames};" in reason


def test_a_frame_count_beyond_any_video_is_refused_when_read(tmp_path):
    """A Sultani file has no snippets to bound its count: the reader caps every count."""
    path = tmp_path / "counts.txt"
    path.write_text("Abuse001_x264 5000\nArson002_x264 1000000000000\n")
    with pytest.raises(ConfigError, match=r"counts.txt:2: expected '<video> <n_frames>' with a "
                                          r"whole number from 1 to 10,000,000"):
        read_frame_counts(path)
    path.write_text("Abuse001_x264 5000\n")
    assert read_frame_counts(path) == {"Abuse001_x264": 5000}


def test_complex_features_are_refused_not_cut_to_their_real_part(tmp_path, capsys, monkeypatch):
    """Issue 22 item 20: complex64 once lost its imaginary part silently."""
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    np.save("in/A001_x264.npy", (np.ones((3, 4)) + 1j).astype(np.complex64))
    np.save("in/B001_x264.npy", np.ones((3, 4), np.float32))
    code, out, err = run_cli(capsys, "import-features", "in", "--format", "rtfm", "--out", "f",
                             "--quiet")
    assert code == 1 and "1 imported, 1 failed" in out
    assert_one_line_error(err, "in/A001_x264.npy: holds complex64 values")
    assert not Path("f/A001_x264.npy").exists() and Path("f/B001_x264.npy").exists()
