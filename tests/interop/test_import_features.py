"""stmil import-features: RTFM, UR-DMU and Sultani files -> grid-1 stmil features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stmil.errors import ConfigError
from stmil.features.store import load_features
from stmil.interop.import_features import (
    ImportSettings,
    find_inputs,
    group_crops,
    import_features,
    video_id,
)
from tests.conftest import assert_one_line_error, log_lines, require_ucf_meta, run_cli


def test_rtfm_ten_crops_are_averaged_and_described(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    x = np.arange(3 * 10 * 4, dtype=np.float32).reshape(3, 10, 4) / 100
    np.save("in/Abuse001_x264_i3d.npy", x)
    Path("in/test.list").write_text("Abuse001_x264_i3d.npy\n")
    code, out, err = run_cli(capsys, "import-features", "in/test.list", "--format", "rtfm",
                             "--out", "feats", "--quiet")
    assert code == 0, err
    assert "1 imported, 0 failed" in out
    arr, meta = load_features("feats", "Abuse001_x264")
    assert arr.shape == (3, 1, 4) and arr.dtype == np.float16
    # Mean over the 10 crops of row t, channel c: (t*40 + c + (0+4+...+36)) / 100.
    want = (np.arange(3)[:, None] * 40 + np.arange(4)[None] + 18) / 100
    np.testing.assert_allclose(arr[:, 0], want, rtol=1e-3)
    assert meta["grid"] == 1 and meta["n_clips"] == 3 and meta["channels"] == 4
    assert meta["n_frames"] == 48 and meta["clip_len"] == meta["stride"] == 16
    assert meta["import_format"] == "rtfm" and meta["import_crops"] == "mean of 10"
    assert meta["import_files"] == [str((tmp_path / "in/Abuse001_x264_i3d.npy").resolve())]
    # --crop keeps one crop; re-importing over our own files is allowed.
    code, out, err = run_cli(capsys, "import-features", "in", "--format", "rtfm", "--crop", "2",
                             "--out", "feats", "--quiet")
    assert code == 0, err
    arr, meta = load_features("feats", "Abuse001_x264")
    np.testing.assert_allclose(arr[:, 0], x[:, 2], rtol=1e-3)
    assert meta["import_crops"] == "crop 2"


def test_urdmu_per_crop_files_from_a_list_with_root(tmp_path):
    crops = [np.full((2, 3), k, dtype=np.float32) for k in range(10)]
    for k, c in enumerate(crops):
        (tmp_path / "store" / "dataset" / "Abuse").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "store" / "dataset" / "Abuse" / f"Abuse028_x264__{k}.npy", c)
    lst = tmp_path / "UCF_Test.list"
    lst.write_text("".join(f"dataset/Abuse/Abuse028_x264__{k}.npy\n" for k in range(10)))
    s = import_features([lst], tmp_path / "f", ImportSettings("urdmu"), root=tmp_path / "store")
    assert s.written == ["Abuse028_x264"] and not s.failed
    arr, meta = load_features(tmp_path / "f", "Abuse028_x264")
    np.testing.assert_array_equal(arr[:, 0], np.full((2, 3), 4.5))  # mean of 0..9
    assert meta["import_crops"] == "mean of 10" and len(meta["import_files"]) == 10
    s = import_features([lst], tmp_path / "f", ImportSettings("urdmu", crop=7),
                        root=tmp_path / "store")
    arr, meta = load_features(tmp_path / "f", "Abuse028_x264")
    np.testing.assert_array_equal(arr[:, 0], np.full((2, 3), 7.0))
    assert meta["import_crops"] == "crop 7"
    assert meta["import_files"] == [meta["source"]] and meta["source"].endswith("__7.npy")


def test_sultani_txt_is_32_segments(tmp_path):
    rows = np.arange(32 * 5).reshape(32, 5) / 1000
    (tmp_path / "Arrest001_x264.txt").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    s = import_features([tmp_path / "Arrest001_x264.txt"], tmp_path / "f",
                        ImportSettings("sultani"))
    assert s.written == ["Arrest001_x264"]
    arr, meta = load_features(tmp_path / "f", "Arrest001_x264")
    np.testing.assert_allclose(arr[:, 0], rows, rtol=1e-3)
    assert meta["n_clips"] == 32 and meta["endpoint"] == "import:sultani"


@pytest.mark.parametrize("case, needle", [
    ("shape", "shape (4,); expected (T, crops, D) or (T, D)"),
    ("nan", "NaN or infinite values"),
    ("missing", "Gone001_x264_i3d.npy: missing (named by the list)"),
    ("crop", "Bad001_x264_i3d.npy: shape (2, 3) has no crops, so no crop 1; leave --crop out"),
])
def test_bad_files_are_one_line_each_and_the_batch_carries_on(tmp_path, capsys, monkeypatch,
                                                              case, needle):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    np.save("in/Good001_x264_i3d.npy", np.ones((2, 2, 3), np.float32))
    names = ["Good001_x264_i3d.npy"]
    if case == "shape":
        np.save("in/Bad001_x264_i3d.npy", np.ones(4, np.float32))
        names.append("Bad001_x264_i3d.npy")
    elif case == "nan":
        np.save("in/Bad001_x264_i3d.npy", np.full((2, 3), np.nan, np.float32))
        names.append("Bad001_x264_i3d.npy")
    elif case == "crop":
        np.save("in/Bad001_x264_i3d.npy", np.ones((2, 3), np.float32))
        names.append("Bad001_x264_i3d.npy")
    else:
        names.append("Gone001_x264_i3d.npy")
    Path("in/x.list").write_text("\n".join(names) + "\n")
    crop = ["--crop", "1"] if case == "crop" else []
    code, out, err = run_cli(capsys, "import-features", "in/x.list", "--format", "rtfm",
                             "--out", "feats", *crop, "--quiet")
    assert code == 1
    assert_one_line_error(err, needle)
    assert "1 imported, 1 failed" in out
    assert Path("feats/Good001_x264.npy").is_file() and not Path("feats/Bad001_x264.npy").exists()


@pytest.mark.parametrize("text, needle", [
    ("1 2\n" * 31, "Bad001_x264.txt: 31 lines, a Sultani feature file has 32"),
    ("1 2\n" * 31 + "1 x\n", "Bad001_x264.txt: not a Sultani feature file"),
    ("1 2\n" * 31 + "1\n", "Bad001_x264.txt: not a Sultani feature file"),
    ("1 2\n" * 31 + "1 nan\n", "Bad001_x264.txt: NaN or infinite values"),
])
def test_bad_sultani_files_are_one_line_each(tmp_path, capsys, monkeypatch, text, needle):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("in/Good001_x264.txt").write_text("1 2\n" * 32)
    Path("in/Bad001_x264.txt").write_text(text)
    code, out, err = run_cli(capsys, "import-features", "in", "--format", "sultani", "--out",
                             "feats", "--quiet")
    assert code == 1
    assert_one_line_error(err, needle)
    assert "1 imported, 1 failed" in out and not Path("feats/Bad001_x264.npy").exists()


def test_refuses_to_overwrite_what_it_did_not_write(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("feats").mkdir()
    np.save("in/A001_x264.npy", np.ones((2, 3), np.float32))
    Path("feats/A001_x264.npy").write_bytes(b"mine")
    code, _, err = run_cli(capsys, "import-features", "in", "--format", "rtfm", "--out",
                           "feats", "--quiet")
    assert code == 1
    assert_one_line_error(err, "feats/A001_x264.npy: exists without A001_x264.json")
    assert Path("feats/A001_x264.npy").read_bytes() == b"mine"
    # An extracted (not imported) feature file is stmil's, but not this command's.
    Path("feats/A001_x264.json").write_text(json.dumps(
        {"fps": 30, "n_frames": 32, "width": 8, "height": 8, "clip_len": 16, "stride": 16,
         "size": 224, "grid": 1, "endpoint": "Mixed_4e", "tail": "drop", "n_clips": 2,
         "channels": 3}))
    code, _, err = run_cli(capsys, "import-features", "in", "--format", "rtfm", "--out",
                           "feats", "--quiet")
    assert code == 1
    assert_one_line_error(err, "holds features extracted from a video")


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="format must be one of rtfm, urdmu, sultani"):
        ImportSettings("i3d")
    with pytest.raises(ConfigError, match="snippet_frames must be a whole number"):
        ImportSettings("rtfm", snippet_frames=0)


def test_video_ids_follow_the_naming_conventions():
    assert video_id(Path("dataset/Abuse/Abuse028_x264__9.npy")) == ("Abuse028_x264", 9)
    assert video_id(Path("x/Abuse001_x264_i3d.npy")) == ("Abuse001_x264", None)
    assert video_id(Path("Normal_Videos_006_x264.txt")) == ("Normal_Videos_006_x264", None)


def test_real_lists_and_sultani_features():
    groups = group_crops(find_inputs([require_ucf_meta("UCF_Test.list")], "urdmu"))
    assert len(groups) == 290  # ten crops of each of the 290 test videos
    assert sum(len(p) for p in groups.values()) == 2900
    assert [c for c, _ in groups["Abuse028_x264"]] == list(range(10))


def test_real_sultani_features_import(tmp_path):
    src = require_ucf_meta("sultani-c3d-32seg/Explosion008_x264.txt").parent
    s = import_features([src], tmp_path, ImportSettings("sultani"))
    assert sorted(s.written) == ["Explosion008_x264", "Normal_Videos_006_x264"]
    arr, meta = load_features(tmp_path, "Explosion008_x264")
    first = np.array(src.joinpath("Explosion008_x264.txt").read_text().split()[:4], float)
    assert arr.shape == (32, 1, 4096) and meta["channels"] == 4096
    np.testing.assert_allclose(arr[0, 0, :4], first, atol=1e-3)


def test_sultani_segments_placed_on_real_frames_give_the_segments_back(tmp_path, capsys,
                                                                      monkeypatch):
    from stmil.mil.bags import make_bag

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    rows = rng.uniform(0.1, 1.0, (32, 6)).round(3)
    Path("Arrest001_x264.txt").write_text("\n".join(" ".join(map(str, r)) for r in rows))
    Path("counts.txt").write_text("# video frames\nArrest/Arrest001_x264.mp4 645\n")
    code, out, err = run_cli(capsys, "import-features", "Arrest001_x264.txt", "--format",
                             "sultani", "--frame-counts", "counts.txt", "--out", "f", "--quiet")
    assert code == 0, err
    arr, meta = load_features("f", "Arrest001_x264")
    assert meta["n_frames"] == 645 and arr.shape == (40, 1, 6)  # 645 // 16 clips
    # Bounds round(1.25 k) = 0, 1, 2 (2.5 rounds to even), 4, 5: segment 2 is clips 2 and 3.
    np.testing.assert_allclose(arr[[0, 1, 2, 3, 4], 0], rows[[0, 1, 2, 2, 3]], rtol=1e-3)
    bag = make_bag(np.asarray(arr, np.float32), 32, grid1=True)[:, 0]  # stmil's segments
    np.testing.assert_allclose(bag, rows / np.linalg.norm(rows, axis=1, keepdims=True),
                               rtol=2e-3)
    Path("counts.txt").write_text("Other001_x264 645\n")
    code, out, err = run_cli(capsys, "import-features", "Arrest001_x264.txt", "--format",
                             "sultani", "--frame-counts", "counts.txt", "--out", "f", "--quiet")
    assert code == 1
    assert_one_line_error(err, "Arrest001_x264.txt: video Arrest001_x264 is not in "
                          "--frame-counts")


def test_export_then_import_gives_the_same_arrays(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    rng = np.random.default_rng(1)
    for vid in ("Abuse001_x264", "Normal_Videos_002_x264"):
        np.save(f"in/{vid}.npy", rng.uniform(0, 4, (5, 10, 6)).astype(np.float32))
    assert run_cli(capsys, "import-features", "in", "--format", "rtfm", "--out", "a",
                   "--quiet")[0] == 0
    code, out, err = run_cli(capsys, "export-features", "a", "--out", "rtfm", "--quiet")
    assert code == 0, err
    assert Path("rtfm/features.list").read_text().split() == [
        "Abuse001_x264.npy", "Normal_Videos_002_x264.npy"]
    assert np.load("rtfm/Abuse001_x264.npy").shape == (5, 6)
    assert run_cli(capsys, "import-features", "rtfm/features.list", "--format", "rtfm",
                   "--out", "b", "--quiet")[0] == 0
    for vid in ("Abuse001_x264", "Normal_Videos_002_x264"):
        np.testing.assert_array_equal(load_features("a", vid)[0], load_features("b", vid)[0])
    # A second export replaces its own files; a file it did not write is refused.
    assert run_cli(capsys, "export-features", "a", "--out", "rtfm", "--quiet")[0] == 0
    Path("other").mkdir()
    Path("other/Abuse001_x264.npy").write_bytes(b"theirs")
    code, out, err = run_cli(capsys, "export-features", "a", "--out", "other", "--quiet")
    assert code == 1
    assert_one_line_error(err, "other/Abuse001_x264.npy: exists and no stmil export wrote it")
    assert Path("other/Abuse001_x264.npy").read_bytes() == b"theirs"


def test_export_averages_the_cuboids_of_grid_features(tmp_path):
    from stmil.interop.export import export_features

    feats = tmp_path / "f"
    feats.mkdir()
    x = np.arange(2 * 4 * 3, dtype=np.float16).reshape(2, 4, 3)  # 2 clips, 2x2 grid
    np.save(feats / "v.npy", x)
    (feats / "v.json").write_text(json.dumps(
        {"fps": 30, "n_frames": 32, "width": 8, "height": 8, "clip_len": 16, "stride": 16,
         "size": 224, "grid": 2, "endpoint": "Mixed_4e", "tail": "drop", "n_clips": 2,
         "channels": 3}))
    export_features(feats, tmp_path / "o")
    # Clip 0: cells hold 0-2, 3-5, 6-8, 9-11 -> mean (4.5, 5.5, 6.5); clip 1: +12.
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "v.npy"),
                                  [[4.5, 5.5, 6.5], [16.5, 17.5, 18.5]])


def test_a_video_listed_twice_is_refused(tmp_path, caplog):
    np.save(tmp_path / "A001_x264.npy", np.ones((2, 3), np.float32))
    (tmp_path / "x.list").write_text("A001_x264.npy\nA001_x264.npy\n")
    s = import_features([tmp_path / "x.list"], tmp_path / "f", ImportSettings("rtfm"))
    lines = log_lines(caplog)
    assert s.failed and lines[0].startswith("error: ")
    assert "a second file for video A001_x264" in lines[0]
