"""The video order of stmil gt / export / export-features against the community's real lists,
with the real frame counts of UCF-Crime's 290 test videos; RTFM's gt-ucf.npy rule; the
layouts RTFM's and UR-DMU's loaders read.

Expected values come from the published files and rules (UCF_Annotation.txt, UCF_Test.list,
a line-by-line transcription of RTFM's make_gt_ucf.py), never from stmil's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from stmil.interop.order import read_video_list, split_name
from tests.conftest import assert_one_line_error, require_ucf_meta, run_cli


def test_names_of_every_projects_list_lines():
    assert split_name("dataset/Abuse/Abuse028_x264__3.npy") == ("Abuse028_x264", 3)
    assert split_name("G:\\UCF_Test_ten_crop_i3d\\Abuse028_x264_i3d.npy") == (
        "Abuse028_x264", None)
    assert split_name("Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4\n") == (
        "Normal_Videos_003_x264", None)
    assert split_name("/feats/Normal_Videos_003_x264.npy") == ("Normal_Videos_003_x264", None)


def test_a_list_naming_a_video_twice_apart_is_refused(tmp_path):
    (tmp_path / "x.list").write_text("a/A__0.npy\na/A__1.npy\na/B__0.npy\na/A__2.npy\n")
    with pytest.raises(Exception, match=r"x.list:4: A again"):
        read_video_list(tmp_path / "x.list")


def _annotation() -> list[tuple[str, str, int, list[tuple[int, int]]]]:
    """UCF_Annotation.txt: (folder, video id, real n_frames, 1-based inclusive events)."""
    rows = []
    for line in require_ucf_meta("UCF_Annotation.txt").read_text().splitlines():
        f = line.split()
        folder, name = f[0].split("/")
        ev = [int(x) for x in f[3:7]]
        rows.append((folder, name.removesuffix(".mp4"), int(f[1]),
                     [(ev[i], ev[i + 1]) for i in (0, 2) if ev[i] >= 0]))
    return rows


@pytest.fixture(scope="module")
def ucf290(tmp_path_factory) -> Path:
    """A UCF-Crime root of the real lists and annotation (links, not copies) and grid-1
    features of the 290 test videos with their real frame counts (16-frame clips, the tail
    dropped), plus the real UR-DMU test list."""
    base = tmp_path_factory.mktemp("ucf290")
    root = base / "ucf"
    root.mkdir()
    for name in ("Anomaly_Train.txt", "Anomaly_Test.txt",
                 "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"):
        (root / name).symlink_to(require_ucf_meta(name))
    (base / "UCF_Test.list").symlink_to(require_ucf_meta("UCF_Test.list"))
    feats = base / "feats"
    feats.mkdir()
    for _, vid, n, _ in _annotation():
        t = n // 16
        np.save(feats / f"{vid}.npy", np.full((t, 1, 4), len(vid), np.float16))
        (feats / f"{vid}.json").write_text(json.dumps(
            {"fps": 30.0, "n_frames": n, "width": 320, "height": 240, "clip_len": 16,
             "stride": 16, "size": 224, "grid": 1, "endpoint": "Mixed_4e", "tail": "drop",
             "n_clips": t, "channels": 4}))
    return base


def _list_ids(path: Path) -> list[str]:
    """Video ids of UR-DMU's list, every 10 lines one video (as its test() groups them)."""
    lines = path.read_text().split()
    assert len(lines) == 2900
    return [ln.split("/")[-1].split("__")[0] for ln in lines[::10]]


def _perfect_in_list_order(list_ids: list[str]) -> np.ndarray:
    """What a community test loop that walks the list gets from a perfect predictor: for each
    video in list order, 16 T frames, 1 on the annotated frames (1-based s..e)."""
    ann = {vid: (n, ev) for _, vid, n, ev in _annotation()}
    out = []
    for vid in list_ids:
        n, events = ann[vid]
        y = np.zeros(n // 16 * 16)
        for s, e in events:
            y[s - 1:e] = 1
        out.append(y)
    return np.concatenate(out)


def test_gt_in_the_lists_order_scores_a_perfect_predictor_1(ucf290, capsys, monkeypatch):
    monkeypatch.chdir(ucf290)
    list_ids = _list_ids(Path("UCF_Test.list"))
    perfect = _perfect_in_list_order(list_ids)
    assert len(perfect) == 1_109_824  # the real test set's 16 T frames
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "gt", "--list", "UCF_Test.list", "--quiet")
    assert code == 0, err
    gt = np.load("gt/gt.npy")
    assert roc_auc_score(gt, perfect) == 1.0
    manifest = json.loads(Path("gt/gt.json").read_text())
    assert [e["id"] for e in manifest["videos"]] == list_ids
    assert manifest["order"]["rule"] == "list" and manifest["order"]["videos"] == 290
    # Without --list: Anomaly_Test.txt's order, which the same predictor does not fit
    # (Vandalism after the normal videos): the failure the list prevents.
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "gt-default", "--quiet")
    assert code == 0, err
    default = json.loads(Path("gt-default/gt.json").read_text())
    assert default["order"] == {"rule": "dataset", "split": "test"}
    assert roc_auc_score(np.load("gt-default/gt.npy"), perfect) < 0.99


def test_a_list_that_does_not_fit_the_split_is_one_line(ucf290, capsys, monkeypatch):
    monkeypatch.chdir(ucf290)
    lines = Path("UCF_Test.list").read_text().split()
    Path("short.list").write_text("\n".join(lines[10:]) + "\n")
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "g1", "--list", "short.list", "--quiet")
    assert code == 1
    assert_one_line_error(err, "short.list: does not list 1 videos of the test split: "
                          "Abuse028_x264")
    Path("extra.list").write_text("\n".join([*lines, "dataset/X/Robbery999_x264__0.npy"]))
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "g2", "--list", "extra.list", "--quiet")
    assert code == 1
    assert_one_line_error(err, "extra.list: lists 1 videos not in the test split: "
                          "Robbery999_x264")
    assert not Path("g1").exists() or not any(Path("g1").iterdir())


def _make_gt_ucf(list_ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """RTFM's list/make_gt_ucf.py, line by line, on the real annotation (the .mat files hold
    the same 1-based s, e as the text annotation); returns the vector and the videos whose
    count differs from 16 T (where that script prints 'Num of frames is not correct')."""
    ann = {vid: (n, ev) for _, vid, n, ev in _annotation()}
    gt: list[float] = []
    odd = []
    for vid in list_ids:
        n_frames, events = ann[vid]
        num_frame = n_frames // 16 * 16
        count = 0
        if "Normal_" in vid:
            for _ in range(0, num_frame):
                gt.append(0.0)
                count += 1
        elif len(events) == 1:
            start_idx, end_idx = events[0]
            for _ in range(0, start_idx):
                gt.append(0.0)
                count += 1
            if not (end_idx + 1) > num_frame:
                for _ in range(start_idx, end_idx + 1):
                    gt.append(1.0)
                    count += 1
                for _ in range(end_idx + 1, num_frame):
                    gt.append(0.0)
                    count += 1
            else:
                for _ in range(start_idx, end_idx):
                    gt.append(1.0)
                    count += 1
        else:
            (start_idx, end_idx), (start_idx_2, end_idx_2) = events
            for _ in range(0, start_idx):
                gt.append(0.0)
                count += 1
            for _ in range(start_idx, end_idx + 1):
                gt.append(1.0)
                count += 1
            for _ in range(end_idx + 1, start_idx_2):
                gt.append(0.0)
                count += 1
            if not (end_idx_2 + 1) > num_frame:
                for _ in range(start_idx_2, end_idx_2 + 1):
                    gt.append(1.0)
                    count += 1
                for _ in range(end_idx_2 + 1, num_frame):
                    gt.append(0.0)
                    count += 1
            else:
                for _ in range(start_idx_2, end_idx_2):
                    gt.append(1.0)
                    count += 1
        if count != num_frame:
            odd.append(vid)
    return np.array(gt, dtype=float), odd


def test_convention_rtfm_is_make_gt_ucf(ucf290, capsys, monkeypatch):
    monkeypatch.chdir(ucf290)
    list_ids = _list_ids(Path("UCF_Test.list"))
    want, odd = _make_gt_ucf(list_ids)
    assert len(odd) == 5  # events past 16 T: RTFM's rule writes e labels for them
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "rtfm", "--list", "UCF_Test.list", "--convention", "rtfm",
                             "--quiet")
    assert code == 0, err
    np.testing.assert_array_equal(np.load("rtfm/gt.npy"), want)
    assert "--convention rtfm: 5 videos" in err
    m = json.loads(Path("rtfm/gt.json").read_text())
    assert m["convention"] == "rtfm"
    # The default differs by one frame at each end of every event (and the 5 longer tails).
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "ours", "--list", "UCF_Test.list", "--quiet")
    assert code == 0, err
    ours = json.loads(Path("ours/gt.json").read_text())
    lengths = {e["id"]: e["length"] for e in ours["videos"]}
    rtfm_lengths = {e["id"]: e["length"] for e in m["videos"]}
    assert sorted(v for v in lengths if lengths[v] != rtfm_lengths[v]) == sorted(odd)
    code, out, err = run_cli(capsys, "gt", "--data", "ucf", "--features", "feats", "--out",
                             "x", "--convention", "rtfm", "--tail", "frames", "--quiet")
    assert code == 1
    assert_one_line_error(err, "--convention rtfm writes RTFM's 16 x T labels")


def test_export_features_rtfm_and_urdmu_layouts_are_what_their_loaders_index(
        ucf290, capsys, monkeypatch):
    monkeypatch.chdir(ucf290)
    # Train videos need features too: the real train list, 3 clips each (test ones are real).
    for line in Path("ucf/Anomaly_Train.txt").read_text().split():
        vid = line.split("/")[-1].removesuffix(".mp4")
        np.save(Path("feats") / f"{vid}.npy", np.full((3, 1, 4), 1, np.float16))
        Path(f"feats/{vid}.json").write_text(json.dumps(
            {"fps": 30.0, "n_frames": 48, "width": 320, "height": 240, "clip_len": 16,
             "stride": 16, "size": 224, "grid": 1, "endpoint": "Mixed_4e", "tail": "drop",
             "n_clips": 3, "channels": 4}))
    code, out, err = run_cli(capsys, "export-features", "feats", "--out", "rtfm", "--layout",
                             "rtfm", "--data", "ucf", "--list", "UCF_Test.list", "--quiet")
    assert code == 0, err
    assert "first 810 lines are the anomalous videos" in out
    train = Path("rtfm/ucf-i3d.list").read_text().splitlines()
    test = Path("rtfm/ucf-i3d-test.list").read_text().splitlines()
    assert len(train) == 1610 and len(test) == 290
    # RTFM's dataset.py: list[:810] anomalous, list[810:] normal; np.load(line.strip('\n'))
    # from another working directory; training transposes (T, 10, F) -> (10, T, F).
    monkeypatch.chdir("/")
    assert not any("Normal" in p for p in train[:810])
    assert all("Normal" in p for p in train[810:])
    x = np.load(train[0].strip("\n"), allow_pickle=True)
    assert x.shape == (3, 10, 4) and x.transpose(1, 0, 2).shape == (10, 3, 4)
    assert [p.split("/")[-1].removesuffix("_i3d.npy") for p in test] == _list_ids(
        ucf290 / "UCF_Test.list")
    # Its test path: a batch of one (1, T, 10, F) permuted to (1, 10, T, F), 16 T frames.
    t = np.load(test[0].strip("\n"))[None].transpose(0, 2, 1, 3)
    n = {vid: n for _, vid, n, _ in _annotation()}[_list_ids(ucf290 / "UCF_Test.list")[0]]
    assert t.shape == (1, 10, n // 16, 4)
    monkeypatch.chdir(ucf290)
    m = json.loads(Path("rtfm/export.json").read_text())
    assert m["train_anomalous_lines"] == 810 and m["layout"] == "rtfm"

    code, out, err = run_cli(capsys, "export-features", "feats", "--out", "urdmu", "--layout",
                             "urdmu", "--data", "ucf", "--list", "UCF_Test.list", "--prefix",
                             "dataset", "--quiet")
    assert code == 0, err
    assert "first 8100 lines" in out
    train = Path("urdmu/UCF_Train.list").read_text().split()
    test = Path("urdmu/UCF_Test.list").read_text().split()
    assert len(train) == 16100 and len(test) == 2900
    assert not any("Normal" in p for p in train[:8100]) and all(
        "Normal" in p for p in train[8100:])
    # UR-DMU's test() averages every 10 lines as one video's crops: the same video, in the
    # real list's order, each (T, F).
    real = require_ucf_meta("UCF_Test.list").read_text().split()
    assert [p.split("/")[-1] for p in test] == [p.split("/")[-1] for p in real]
    assert all(p.startswith("dataset/") for p in test)
    first = [np.load(Path("urdmu") / p.split("/")[-1]) for p in test[:10]]
    assert all(a.shape == first[0].shape and a.ndim == 2 for a in first)


def test_export_features_plain_says_its_order_and_refuses_a_foreign_file(
        ucf290, capsys, monkeypatch):
    monkeypatch.chdir(ucf290)
    code, out, err = run_cli(capsys, "export-features", "feats", "--out", "plain", "--list",
                             "UCF_Test.list", "--quiet")
    assert code == 0, err
    lines = Path("plain/features.list").read_text().splitlines()
    assert [Path(p).stem for p in lines] == _list_ids(Path("UCF_Test.list"))
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in lines)
    m = json.loads(Path("plain/export.json").read_text())
    assert m["order"]["rule"] == "list"
    code, out, err = run_cli(capsys, "export-features", "feats", "--out", "p2", "--layout",
                             "rtfm", "--quiet")
    assert code == 1
    assert_one_line_error(err, "--layout rtfm needs the dataset's labels and splits")
