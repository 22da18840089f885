"""stmil gt: the frame-label vector in list order, both tail policies, manifest round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stmil.interop.gt import VectorError, read_vector
from tests.conftest import assert_one_line_error, run_cli
from tests.interop.ucf import write_ucf_lists


def _features(feats: Path, vid: str, n_clips: int, n_frames: int, tail: str = "drop") -> None:
    feats.mkdir(exist_ok=True)
    np.save(feats / f"{vid}.npy", np.ones((n_clips, 1, 4), np.float16))
    (feats / f"{vid}.json").write_text(json.dumps(
        {"fps": 30.0, "n_frames": n_frames, "width": 320, "height": 240, "clip_len": 16,
         "stride": 16, "size": 224, "grid": 1, "endpoint": "Mixed_4e", "tail": tail,
         "n_clips": n_clips, "channels": 4}))


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Normal first in the list: the vector follows the list, not the alphabet.
    write_ucf_lists(Path("ucf"), [], [("Normal_Videos_001_x264", 0), ("Arson001_x264", 1)],
                    {"Arson001_x264": [(5, 20), (39, 40)]})  # 1-based inclusive
    _features(Path("feats"), "Normal_Videos_001_x264", 1, 20)
    _features(Path("feats"), "Arson001_x264", 2, 40)  # 8 frames after the last clip
    return tmp_path


def test_gt_vector_by_hand_with_both_tails(data, capsys):
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "gt", "--quiet")
    assert code == 0, err
    arson = np.zeros(32)
    arson[4:20] = 1  # frames 5..20, 1-based; frames 39-40 lie in the dropped tail
    np.testing.assert_array_equal(np.load("gt/gt.npy"), np.concatenate([np.zeros(16), arson]))
    vectors, m = read_vector("gt", "gt")
    assert [(e["id"], e["offset"], e["length"]) for e in m["videos"]] == [
        ("Normal_Videos_001_x264", 0, 16), ("Arson001_x264", 16, 32)]
    np.testing.assert_array_equal(vectors["Arson001_x264"], arson)
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "gt", "--tail", "frames", "--quiet")  # replaces its own output
    assert code == 0, err
    arson = np.zeros(40)
    arson[4:20] = arson[38:40] = 1
    np.testing.assert_array_equal(np.load("gt/gt.npy"), np.concatenate([np.zeros(20), arson]))
    assert read_vector("gt", "gt")[1]["tail"] == "frames"


def test_a_padded_tail_clip_repeats_the_last_frame(data, capsys):
    _features(Path("feats"), "Arson001_x264", 3, 40, tail="pad")  # clip 2: frames 32-47
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "gt", "--quiet")
    assert code == 0, err
    arson = np.zeros(48)
    arson[4:20] = 1
    arson[38:48] = 1  # frames 39-40 (1-based), then 8 entries past the end repeat frame 40
    vectors, m = read_vector("gt", "gt")
    np.testing.assert_array_equal(vectors["Arson001_x264"], arson)
    assert m["videos"][1]["length"] == 48 and m["videos"][1]["n_frames"] == 40


def test_gt_refuses_files_it_did_not_write(data, capsys):
    Path("gt").mkdir()
    Path("gt/gt.npy").write_bytes(b"theirs")
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "gt", "--quiet")
    assert code == 1
    assert_one_line_error(err, "gt/gt.npy: exists without gt.json")
    assert Path("gt/gt.npy").read_bytes() == b"theirs"


def test_a_changed_vector_no_longer_matches_its_manifest(data, capsys):
    run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out", "gt", "--quiet")
    np.save("gt/gt.npy", np.ones(48, np.float32))
    with pytest.raises(VectorError, match="gt.npy: does not match gt.json"):
        read_vector("gt", "gt")
