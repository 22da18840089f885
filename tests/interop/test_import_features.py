"""stmil import-features: RTFM, UR-DMU and Sultani files -> grid-1 stmil features."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

from stmil.errors import ConfigError
from stmil.features.store import FeatureMeta, load_features, write_features
from stmil.interop.import_features import (
    ImportSettings,
    find_inputs,
    group_crops,
    import_features,
    sultani_clip_segments,
    video_id,
)
from stmil.ownership import Ledger
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
    assert meta.grid == 1 and meta.n_clips == 3 and meta.channels == 4
    assert meta.n_frames == 48 and meta.clip_len == meta.stride == 16
    assert meta.import_format == "rtfm" and meta.import_crops == "mean of 10"
    assert meta.import_files == (str((tmp_path / "in/Abuse001_x264_i3d.npy").resolve()),)
    # --crop keeps one crop; re-importing over our own files is allowed.
    code, out, err = run_cli(capsys, "import-features", "in", "--format", "rtfm", "--crop", "2",
                             "--out", "feats", "--quiet")
    assert code == 0, err
    arr, meta = load_features("feats", "Abuse001_x264")
    np.testing.assert_allclose(arr[:, 0], x[:, 2], rtol=1e-3)
    assert meta.import_crops == "crop 2"


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
    assert meta.import_crops == "mean of 10" and len(meta.import_files) == 10
    s = import_features([lst], tmp_path / "f", ImportSettings("urdmu", crop=7),
                        root=tmp_path / "store")
    arr, meta = load_features(tmp_path / "f", "Abuse028_x264")
    np.testing.assert_array_equal(arr[:, 0], np.full((2, 3), 7.0))
    assert meta.import_crops == "crop 7"
    assert meta.import_files == (meta.source,) and meta.source.endswith("__7.npy")


def test_sultani_txt_is_32_segments(tmp_path):
    rows = np.arange(32 * 5).reshape(32, 5) / 1000
    (tmp_path / "Arrest001_x264.txt").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    s = import_features([tmp_path / "Arrest001_x264.txt"], tmp_path / "f",
                        ImportSettings("sultani"))
    assert s.written == ["Arrest001_x264"]
    arr, meta = load_features(tmp_path / "f", "Arrest001_x264")
    np.testing.assert_allclose(arr[:, 0], rows, rtol=1e-3)
    assert meta.n_clips == 32 and meta.endpoint == "import:sultani"


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


def test_replaces_what_stmil_wrote_and_refuses_the_users_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("feats").mkdir()
    np.save("in/A001_x264.npy", np.ones((2, 3), np.float32))
    Path("feats/A001_x264.npy").write_bytes(b"mine")
    cmd = ("import-features", "in", "--format", "rtfm", "--out", "feats", "--quiet")
    code, _, err = run_cli(capsys, *cmd)
    assert code == 1
    assert_one_line_error(err, "feats/A001_x264.npy: exists without A001_x264.json")
    assert Path("feats/A001_x264.npy").read_bytes() == b"mine"
    # Features extract wrote (the folder's ledger says so) are stmil's: an import replaces them.
    Path("feats/A001_x264.npy").unlink()
    extracted = FeatureMeta(fps=30.0, source_fps=30.0, n_frames=32, width=8, height=8,
                            clip_len=16, stride=16, size=224, grid=1, endpoint="Mixed_4e",
                            tail="drop", n_clips=2, channels=3)
    write_features(Path("feats"), "A001_x264", np.zeros((2, 1, 3), np.float16), extracted)
    code, _, err = run_cli(capsys, *cmd)
    assert code == 0, err
    arr, meta = load_features("feats", "A001_x264")
    assert meta.import_format == "rtfm" and (arr == 1).all()
    assert Ledger.load("feats").files["A001_x264.json"]["command"] == "import-features"
    # A file the user changed since is theirs: refused in one line, and left as it is.
    text = Path("feats/A001_x264.json").read_text().replace('"rtfm"', '"mine"')
    Path("feats/A001_x264.json").write_text(text)
    code, _, err = run_cli(capsys, *cmd)
    assert code == 1
    assert_one_line_error(err, "feats/A001_x264.json: exists and is not a file stmil wrote here")
    assert Path("feats/A001_x264.json").read_text() == text


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
    assert arr.shape == (32, 1, 4096) and meta.channels == 4096
    np.testing.assert_allclose(arr[0, 0, :4], first, atol=1e-3)


def _write_sultani(path: Path | str, rows: np.ndarray) -> None:
    Path(path).write_text("\n".join(" ".join(map(str, r)) for r in rows) + "\n")


def test_sultani_segments_are_spread_over_the_real_clips_as_his_code_cut_them(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = np.arange(32 * 6).reshape(32, 6) / 100  # row k is segment k + 1's features
    _write_sultani("Arrest001_x264.txt", rows)
    Path("counts.txt").write_text("# video frames\nArrest/Arrest001_x264.mp4 645\n")
    code, out, err = run_cli(capsys, "import-features", "Arrest001_x264.txt", "--format",
                             "sultani", "--frame-counts", "counts.txt", "--out", "f", "--quiet")
    assert code == 0 and err == "", err
    arr, meta = load_features("f", "Arrest001_x264")
    assert meta.n_frames == 645 and arr.shape == (40, 1, 6)  # 645 // 16 clips
    # shots = round(linspace(1, 40, 33)) = round(1 + 39 k / 32), MATLAB's round (half away
    # from zero): k = 0..4 -> 1, 2.22, 3.44, 4.66, 5.88 -> 1, 2, 3, 5, 6, so segments 1-4 are
    # clips 1 | 2 | 3-4 | 5. k = 15, 16, 17 -> 19.28, 20.5, 21.72 -> 19, 21, 22: segment 16 is
    # clips 19-20 (numpy's 20.5 -> 20 would move clip 20 to segment 17), segment 17 clip 21.
    # k = 30, 31, 32 -> 37.56, 38.78, 40 -> 38, 39, 40: segments 31 and 32 are clips 38 and 39;
    # clip 40 is in none and takes segment 32. (0-based below.)
    clips = [0, 1, 2, 3, 4, 18, 19, 20, 37, 38, 39]
    segments = [0, 1, 2, 2, 3, 15, 15, 16, 30, 31, 31]
    np.testing.assert_allclose(arr[clips, 0], rows[segments], rtol=1e-3)


def _matlab_round(x: float) -> int:
    """MATLAB's ``round`` of a positive number: half away from zero, on the exact double."""
    return int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _sultani_segments(n: int) -> list[list[int]]:
    """The 1-based clips each of the 32 segments averages, transcribed from
    ``Save_C3DFeatures_32Segments.m`` (WaqasSultani/AnomalyDetectionCVPR2018)."""
    # linspace(d1, d2, 33) = [d1 + (0:31) * (d2 - d1) / 32, d2]
    thirty2_shots = [_matlab_round(1 + i * (n - 1) / 32) for i in range(32)] + [n]
    segments = []
    for ishots in range(1, 33):
        ss = thirty2_shots[ishots - 1]
        ee = thirty2_shots[ishots] - 1
        if ss == ee:
            segments.append([ss])  # Feature_vect(ss:ee, :)
        elif ee < ss:
            segments.append([ss])  # Feature_vect(ss, :)
        else:
            segments.append(list(range(ss, ee + 1)))  # mean(Feature_vect(ss:ee, :))
    return segments


def _expected_clip_segments(n: int) -> np.ndarray:
    """0-based segment of each 0-based clip by the stated rule: the last segment whose clips
    include it (as Evaluate_Anomaly_Detector.m overwrites), segment 32 for a clip in none."""
    segments = _sultani_segments(n)
    out = []
    for clip in range(1, n + 1):
        holding = [k for k, clips in enumerate(segments) if clip in clips]
        out.append(holding[-1] if holding else 31)
    return np.array(out)


def _old_clip_segments(n: int) -> np.ndarray:
    """The rule of the import before issue 20, stmil's bag segments (DESIGN.md): clips
    ``[b_k, b_{k+1})`` with ``b = round(linspace(0, n, 33))``, numpy's rounding."""
    bounds = np.round(np.linspace(0, n, 33)).astype(int)
    return np.array([int(np.searchsorted(bounds, c, side="right")) - 1 for c in range(n)])


def _check_against_his_code(n: int) -> None:
    got = sultani_clip_segments(n)
    np.testing.assert_array_equal(got, _expected_clip_segments(n), err_msg=f"n={n}")
    if n >= 33:  # segments are disjoint: each holds exactly his clips (32 also the last clip)
        for k, clips in enumerate(_sultani_segments(n)):
            want = clips + ([n] if k == 31 else [])
            assert sorted(np.flatnonzero(got == k) + 1) == want, (n, k)


def test_sultani_clip_segments_follow_his_code_for_short_and_long_videos():
    for n in range(1, 200):  # n < 33 repeats clips; n <= 17 puts the last clip in segment 32
        _check_against_his_code(n)
    with pytest.raises(ValueError, match="at least one clip"):
        sultani_clip_segments(0)


def test_sultani_clip_segments_on_the_real_test_videos():
    lines = require_ucf_meta("UCF_Annotation.txt").read_text().splitlines()
    counts = [int(line.split()[1]) // 16 for line in lines if line.strip()]
    assert len(counts) == 290
    changed_videos = changed_clips = 0
    for n in counts:
        _check_against_his_code(n)
        moved = int((_expected_clip_segments(n) != _old_clip_segments(n)).sum())
        changed_videos += moved > 0
        changed_clips += moved
    # Measured: the old rule put clips of every one of the 290 videos in another segment.
    assert changed_videos == 290 and changed_clips == 4122 and sum(counts) == 69364


def test_sultani_import_of_the_1748_frame_example(tmp_path):
    n = 1748 // 16
    want = _expected_clip_segments(n)
    assert n == 109 and int((want != _old_clip_segments(n)).sum()) == 13
    rows = np.arange(32 * 3).reshape(32, 3) / 10
    _write_sultani(tmp_path / "Robbery050_x264.txt", rows)
    s = import_features([tmp_path / "Robbery050_x264.txt"], tmp_path / "f",
                        ImportSettings("sultani"), frame_counts={"Robbery050_x264": 1748})
    assert s.written == ["Robbery050_x264"] and not s.failed
    arr, meta = load_features(tmp_path / "f", "Robbery050_x264")
    assert meta.n_frames == 1748 and meta.n_clips == 109
    np.testing.assert_allclose(arr[:, 0], rows[want], rtol=1e-3)


def test_frame_counts_may_cover_part_of_an_import(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    for vid, t in (("Abuse001_x264", 3), ("Normal_Videos_003_x264", 4),
                   ("Normal_Videos_010_x264", 2), ("Arson002_x264", 5)):
        np.save(f"in/{vid}.npy", np.ones((t, 2), np.float32))
    Path("counts.txt").write_text("Abuse/Abuse001_x264.mp4 40\nOther_x264 99\n")
    code, out, err = run_cli(capsys, "import-features", "in", "--format", "rtfm",
                             "--frame-counts", "counts.txt", "--out", "f", "--quiet")
    assert code == 0 and "4 imported, 0 failed" in out
    assert err.strip().splitlines() == [
        "warning: 3 of 4 videos are not in --frame-counts (Arson002_x264, "
        "Normal_Videos_003_x264, Normal_Videos_010_x264): they keep 16 frames a snippet "
        "(n_frames = 16 T)"]
    frames = {v: load_features("f", v)[1].n_frames for v in (
        "Abuse001_x264", "Normal_Videos_003_x264", "Normal_Videos_010_x264", "Arson002_x264")}
    assert frames == {"Abuse001_x264": 40, "Normal_Videos_003_x264": 64,
                      "Normal_Videos_010_x264": 32, "Arson002_x264": 80}


def test_frame_counts_warn_only_of_the_videos_they_leave_out(tmp_path, caplog):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "A001_x264.npy", np.ones((2, 3), np.float32))
    s = import_features([tmp_path / "in"], tmp_path / "f",
                        ImportSettings("rtfm", snippet_frames=8), frame_counts={"A001_x264": 9})
    assert s.written == ["A001_x264"] and log_lines(caplog) == []
    assert load_features(tmp_path / "f", "A001_x264")[1].n_frames == 9
    np.save(tmp_path / "in" / "B001_x264.npy", np.ones((5, 3), np.float32))
    s = import_features([tmp_path / "in"], tmp_path / "f",
                        ImportSettings("rtfm", snippet_frames=8), frame_counts={"A001_x264": 9})
    assert s.written == ["A001_x264", "B001_x264"] and log_lines(caplog) == [
        "warning: 1 of 2 videos are not in --frame-counts (B001_x264): they keep 8 frames a "
        "snippet (n_frames = 8 T)"]
    assert load_features(tmp_path / "f", "B001_x264")[1].n_frames == 40


def test_sultani_files_missing_from_frame_counts_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    for vid in ("Arrest001_x264", "Normal_Videos_006_x264", "Normal_Videos_024_x264"):
        _write_sultani(f"in/{vid}.txt", np.ones((32, 2)))
    Path("counts.txt").write_text("Arrest001_x264 645\n")
    code, out, err = run_cli(capsys, "import-features", "in", "--format", "sultani",
                             "--frame-counts", "counts.txt", "--out", "f", "--quiet")
    assert code == 1 and "1 imported, 2 failed" in out and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0] == (
        "warning: 2 of 3 videos are not in --frame-counts (Normal_Videos_006_x264, "
        "Normal_Videos_024_x264): they are refused (a Sultani file needs its video's frame "
        "count); import them without --frame-counts")
    assert len(lines) == 3 and all(line.startswith("error: in/Normal_Videos_0") for line in
                                   lines[1:])
    assert lines[1].endswith("Normal_Videos_006_x264.txt: video Normal_Videos_006_x264 is not "
                             "in --frame-counts, and a Sultani 32-segment file cannot be placed "
                             "on its video's clips without the video's frame count")
    assert load_features("f", "Arrest001_x264")[1].n_frames == 645
    assert not Path("f/Normal_Videos_006_x264.npy").exists()


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
    assert Path("rtfm/features.list").read_text().split() == [  # from any working folder
        str(Path("rtfm", n).resolve()) for n in ("Abuse001_x264.npy", "Normal_Videos_002_x264.npy")]
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
    assert_one_line_error(err, "other/Abuse001_x264.npy: exists and is not a file stmil wrote")
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
