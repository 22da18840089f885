"""Dataset loaders on real-format snippets written to a temporary folder."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from stmil.datasets import (
    DatasetError,
    VideoRecord,
    detect_format,
    fit_to_video,
    load_dataset,
)
from stmil.datasets.crime2local import (
    detect_vatic_base,
    load_crime2local,
    parse_vatic,
    read_vatic,
    write_vatic,
)
from stmil.datasets.folder import frames_to_intervals, load_folder
from stmil.datasets.ucf_crime import load_ucf_crime, parse_temporal
from tests.conftest import require_ucf_meta


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def touch(path: Path) -> Path:
    return write(path, "")


def by_id(records: list[VideoRecord]) -> dict[str, VideoRecord]:
    return {r.video_id: r for r in records}


# --------------------------------------------------------------------------------- UCF-Crime

UCF_TRAIN = (  # written with CRLF; a blank line and trailing spaces, as in hand-edited lists
    "Arrest/Arrest001_x264.mp4\n"
    "Abuse/Abuse001_x264.mp4   \n"
    "\n"
    "Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4\n"
)

UCF_TEST = """Abuse/Abuse028_x264.mp4
Shooting/Shooting046_x264.mp4
Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4
"""

UCF_TEMPORAL = (
    "Abuse028_x264.mp4  Abuse  165  240  -1  -1  \n"
    "Shooting046_x264.mp4  Shooting  4005  4230  4760  5088\t\n"
    "\n"
    "Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1  \n"
)


@pytest.fixture
def ucf_root(tmp_path: Path) -> Path:
    root = tmp_path / "ucf"
    splits = root / "Anomaly_Detection_splits"
    write(splits / "Anomaly_Train.txt", UCF_TRAIN, newline="\r\n")
    write(splits / "Anomaly_Test.txt", UCF_TEST)
    write(root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt", UCF_TEMPORAL)
    touch(root / "Arrest" / "Arrest001_x264.mp4")  # at root/<line>
    touch(root / "elsewhere" / "deep" / "Abuse028_x264.mp4")  # found by the tree index
    return root


def test_ucf_train(ucf_root: Path) -> None:
    recs = load_ucf_crime(ucf_root, "train")
    assert [r.video_id for r in recs] == [
        "Arrest001_x264",
        "Abuse001_x264",
        "Normal_Videos001_x264",
    ]
    assert [r.label for r in recs] == [1, 1, 0]
    assert [r.category for r in recs] == ["Arrest", "Abuse", "Normal"]
    assert {r.split for r in recs} == {"train"}
    assert all(r.intervals == () and r.boxes == {} and r.n_frames is None for r in recs)
    assert recs[0].path == ucf_root / "Arrest" / "Arrest001_x264.mp4"
    assert recs[1].path is None and recs[2].path is None


def test_ucf_test_intervals_are_zero_based_half_open(ucf_root: Path) -> None:
    recs = by_id(load_ucf_crime(ucf_root, "test"))
    assert list(recs) == ["Abuse028_x264", "Shooting046_x264", "Normal_Videos_003_x264"]
    assert recs["Abuse028_x264"].intervals == ((164, 240),)
    assert recs["Shooting046_x264"].intervals == ((4004, 4230), (4759, 5088))
    assert recs["Normal_Videos_003_x264"].intervals == ()
    assert [r.label for r in recs.values()] == [1, 1, 0]
    assert recs["Abuse028_x264"].path == ucf_root / "elsewhere" / "deep" / "Abuse028_x264.mp4"
    assert recs["Normal_Videos_003_x264"].category == "Normal"


def test_ucf_all_is_train_then_test(ucf_root: Path) -> None:
    recs = load_ucf_crime(ucf_root, "all")
    assert [r.split for r in recs] == ["train"] * 3 + ["test"] * 3


def test_ucf_test_from_temporal_file_alone(tmp_path: Path) -> None:
    write(tmp_path / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt", UCF_TEMPORAL)
    recs = load_dataset(tmp_path, "test")
    assert [(r.video_id, r.label, r.category) for r in recs] == [
        ("Abuse028_x264", 1, "Abuse"),
        ("Shooting046_x264", 1, "Shooting"),
        ("Normal_Videos_003_x264", 0, "Normal"),
    ]
    assert recs[1].intervals == ((4004, 4230), (4759, 5088))


def test_ucf_list_and_temporal_must_agree(ucf_root: Path) -> None:
    temporal = ucf_root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    write(
        temporal,
        UCF_TEMPORAL.replace(
            "Normal_Videos_003_x264.mp4  Normal", "Normal_Videos_003_x264.mp4  Abuse"
        ),
    )
    with pytest.raises(DatasetError) as err:
        load_ucf_crime(ucf_root, "test")
    assert "Anomaly_Test.txt:3:" in str(err.value)
    assert f"{temporal}:4" in str(err.value)


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("Abuse030_x264.mp4  Abuse  1275  1360  -1", "6 whitespace-separated columns"),
        ("Abuse030_x264.mp4  Abuse  1275  13x60  -1  -1", "integer frame numbers"),
        ("Abuse030_x264.mp4  Abuse  1360  1275  -1  -1", "1 <= s <= e"),
        ("Abuse030_x264.mp4  Abuse  1275  -1  -1  -1", "1 <= s <= e"),
        ("Normal_Videos_006_x264.mp4  Normal  10  20  -1  -1", "only -1 for a Normal video"),
    ],
)
def test_ucf_malformed_temporal_line(tmp_path: Path, line: str, what: str) -> None:
    path = write(tmp_path / "t.txt", "Abuse028_x264.mp4  Abuse  165  240  -1  -1\n" + line + "\n")
    with pytest.raises(DatasetError) as err:
        parse_temporal(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: ")
    assert what in msg
    assert repr(line) in msg


def test_ucf_malformed_list_line(ucf_root: Path) -> None:
    train = ucf_root / "Anomaly_Detection_splits" / "Anomaly_Train.txt"
    write(train, "Arrest/Arrest001_x264.mp4\n\nArrest/Arrest002_x264.mp4 3\n")
    with pytest.raises(DatasetError, match=r"Anomaly_Train\.txt:3: one video path per line"):
        load_ucf_crime(ucf_root, "train")


def test_ucf_same_video_in_train_and_test_is_refused(ucf_root: Path) -> None:
    write(ucf_root / "Anomaly_Detection_splits" / "Anomaly_Test.txt", "Arrest/Arrest001_x264.mp4\n")
    with pytest.raises(DatasetError, match="'Arrest001_x264' appears twice"):
        load_ucf_crime(ucf_root, "all")


def test_ucf_missing_train_list_names_root(tmp_path: Path) -> None:
    write(tmp_path / "Anomaly_Test.txt", UCF_TEST)
    with pytest.raises(DatasetError, match="no Anomaly_Train.txt") as err:
        load_ucf_crime(tmp_path, "train")
    assert str(tmp_path) in str(err.value)


# ------------------------------------------------------------------------- UCF-Crime2Local

# 0-based VATIC file: lost rows, an occluded + generated row, extra quoted attributes, 2 tracks.
VATIC_0 = """0 10 20 110 220 0 1 0 0 "Person"
0 10 20 110 220 1 1 0 0 "Person"
0 12 22 112 222 2 0 0 0 "Person"
0 13 23 113 223 3 0 1 1 "Person" "Running"
0 14 24 114 224 4 0 0 1 "Person"
0 14 24 114 224 5 1 0 1 "Person"
0 20 30 120 230 6 0 0 0 "Person"
1 50 60 150 160 3 0 0 0 "Car" "Parked" "Red"
"""

# 1-based VATIC file (smallest frame is 1), CRLF line ends.
VATIC_1 = """0 5 5 50 50 1 1 0 0 "Person"
0 5 5 50 50 2 0 0 0 "Person"
0 6 6 51 51 3 0 0 1 "Person"
0 7 7 52 52 4 1 0 0 "Person"
0 8 8 53 53 5 0 1 0 "Person"
"""


@pytest.fixture
def c2l_root(tmp_path: Path) -> Path:
    root = tmp_path / "UCFCrime2Local"
    readme = root / "readme"
    write(
        readme / "Train_split_AD.txt",
        "Arrest001_x264\nAssault/Assault002_x264.mp4\nNormal_Videos001\n",
    )
    write(readme / "Test_split_AD.txt", "Arrest003\n\nNormal_Videos_004_x264.mp4\n")
    write(readme / "Txt annotations" / "Arrest001_x264.txt", VATIC_0)
    write(readme / "Txt annotations" / "Assault002.txt", VATIC_1, newline="\r\n")
    write(readme / "Txt annotations" / "Arrest003.txt", '0 1 2 3 4 7 0 0 0 "Person"\n')
    touch(root / "videos" / "Arrest001_x264.mp4")
    touch(root / "videos" / "sub" / "Assault002_x264.avi")
    touch(root / "videos" / "Normal_Videos001_x264.mkv")
    return root


def test_vatic_zero_based(c2l_root: Path) -> None:
    path = c2l_root / "readme" / "Txt annotations" / "Arrest001_x264.txt"
    assert detect_vatic_base(path) == 0
    ann = read_vatic(path)
    assert ann.frame_base == 0
    assert ann.boxes == {
        2: [(12.0, 22.0, 112.0, 222.0)],
        3: [(13.0, 23.0, 113.0, 223.0), (50.0, 60.0, 150.0, 160.0)],
        4: [(14.0, 24.0, 114.0, 224.0)],
        6: [(20.0, 30.0, 120.0, 230.0)],
    }
    assert ann.intervals == ((2, 5), (6, 7))


def test_vatic_one_based_and_override(c2l_root: Path) -> None:
    path = c2l_root / "readme" / "Txt annotations" / "Assault002.txt"
    assert detect_vatic_base(path) == 1
    ann = read_vatic(path)
    assert ann.frame_base == 1
    assert ann.boxes == {
        1: [(5.0, 5.0, 50.0, 50.0)],
        2: [(6.0, 6.0, 51.0, 51.0)],
        4: [(8.0, 8.0, 53.0, 53.0)],
    }
    assert ann.intervals == ((1, 3), (4, 5))
    forced = read_vatic(path, frame_base=0)
    assert forced.frame_base == 0
    assert forced.intervals == ((2, 4), (5, 6))


def test_vatic_forced_one_based_refuses_frame_zero(c2l_root: Path) -> None:
    path = c2l_root / "readme" / "Txt annotations" / "Arrest001_x264.txt"
    with pytest.raises(DatasetError, match=r"Arrest001_x264\.txt:1: frame numbers >= 1"):
        read_vatic(path, frame_base=1)


def test_vatic_late_start_is_zero_based(tmp_path: Path) -> None:
    path = write(tmp_path / "v.txt", '3 1 2 3 4 5 0 0 0 "P"\n3 1 2 3 4 6 0 0 0 "P"\n')
    assert detect_vatic_base(path) == 0
    assert read_vatic(path).intervals == ((5, 7),)


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ('0 10 20 110 220 3 0 0 "Person"', "at least 10 columns"),
        ("0 10 20 110 220 3 0 0 0 1", "at least 10 columns"),
        ('0 10 20 110 220 3.5 0 0 0 "Person"', "integer track_id, frame and flags"),
        ('0 10 20 1l0 220 3 0 0 0 "Person"', "numeric box corners"),
        ('0 10 20 110 220 3 2 0 0 "Person"', "flags of 0 or 1"),
    ],
)
def test_vatic_malformed_line(tmp_path: Path, line: str, what: str) -> None:
    path = write(tmp_path / "Arrest009.txt", '0 1 2 3 4 0 0 0 0 "Person"\n\n' + line + "\n")
    with pytest.raises(DatasetError) as err:
        read_vatic(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: ")
    assert what in msg
    assert repr(line) in msg


def test_crime2local_train(c2l_root: Path) -> None:
    recs = load_crime2local(c2l_root, "train")
    assert [r.video_id for r in recs] == [
        "Arrest001_x264",
        "Assault002_x264",
        "Normal_Videos001_x264",
    ]
    assert [r.label for r in recs] == [1, 1, 0]
    assert [r.category for r in recs] == ["Arrest", "Assault", "Normal"]
    assert [r.path for r in recs] == [
        c2l_root / "videos" / "Arrest001_x264.mp4",
        c2l_root / "videos" / "sub" / "Assault002_x264.avi",
        c2l_root / "videos" / "Normal_Videos001_x264.mkv",
    ]
    assert recs[0].intervals == ((2, 5), (6, 7))
    assert recs[0].boxes[3] == [(13.0, 23.0, 113.0, 223.0), (50.0, 60.0, 150.0, 160.0)]
    assert recs[1].intervals == ((1, 3), (4, 5))  # 1-based file converted
    assert recs[2].intervals == () and recs[2].boxes == {}
    assert all(r.has_boxes == bool(r.label) for r in recs)


def test_crime2local_test_without_videos(c2l_root: Path) -> None:
    recs = load_crime2local(c2l_root, "test")
    assert [(r.video_id, r.label, r.path) for r in recs] == [
        ("Arrest003", 1, None),
        ("Normal_Videos_004_x264", 0, None),
    ]
    assert recs[0].intervals == ((7, 8),)
    assert [r.split for r in load_crime2local(c2l_root, "all")] == ["train"] * 3 + ["test"] * 2


def test_crime2local_all_lost_is_normal(c2l_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(c2l_root / "readme" / "Txt annotations" / "Arrest003.txt", '0 1 2 3 4 0 1 0 0 "P"\n')
    with caplog.at_level(logging.WARNING):
        recs = load_crime2local(c2l_root, "test")
    assert recs[0].label == 0 and recs[0].intervals == ()
    assert "every row is lost" in caplog.text


def test_crime2local_malformed_split_line(c2l_root: Path) -> None:
    write(c2l_root / "readme" / "Test_split_AD.txt", "Arrest003\nArrest004 Arrest\n")
    with pytest.raises(DatasetError, match=r"Test_split_AD\.txt:2: one video name per line"):
        load_crime2local(c2l_root, "test")


# ------------------------------------------------------------------------------ detection


def test_detect_format(ucf_root: Path, c2l_root: Path, tmp_path: Path) -> None:
    assert detect_format(ucf_root) == "ucf_crime"
    assert detect_format(c2l_root) == "crime2local"
    # A Crime2Local root that also holds UCF-Crime's temporal file is still Crime2Local.
    write(c2l_root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt", UCF_TEMPORAL)
    assert detect_format(c2l_root) == "crime2local"
    (tmp_path / "mine" / "anomalous").mkdir(parents=True)
    assert detect_format(tmp_path / "mine") == "folder"


def test_detect_format_names_root_when_nothing_matches(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no known dataset format") as err:
        detect_format(empty)
    assert str(empty) in str(err.value)
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "missing")


def test_load_dataset_dispatch_and_arguments(ucf_root: Path, c2l_root: Path) -> None:
    assert load_dataset(ucf_root, "test") == load_ucf_crime(ucf_root, "test")
    assert load_dataset(c2l_root, "train", format="crime2local") == load_crime2local(c2l_root)
    with pytest.raises(DatasetError, match="split must be one of"):
        load_dataset(ucf_root, "val")
    with pytest.raises(DatasetError, match="format must be auto or one of"):
        load_dataset(ucf_root, format="kinetics")


# --------------------------------------------------------------------------------- folder


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "mine"
    touch(root / "normal" / "a.mp4")
    touch(root / "normal" / "sub" / "b.MOV")
    touch(root / "anomalous" / "Fighting" / "c.mp4")
    touch(root / "anomalous" / "d.webm")
    touch(root / "anomalous" / "notes.txt")  # not a video
    touch(root / "anomalous" / ".e.mp4")  # hidden
    return root


def test_folder_without_annotations(folder_root: Path) -> None:
    recs = by_id(load_dataset(folder_root))
    assert sorted(recs) == ["a", "b", "c", "d"]
    assert {k: (r.label, r.category) for k, r in recs.items()} == {
        "a": (0, "Normal"),
        "b": (0, "Normal"),
        "c": (1, "Fighting"),
        "d": (1, ""),
    }
    assert recs["b"].path == folder_root / "normal" / "sub" / "b.MOV"
    assert all(r.split == "train" and r.intervals == () for r in recs.values())
    with pytest.raises(DatasetError, match=r"no videos in split 'test'.*\"split\": \"test\""):
        load_folder(folder_root, "test")


def test_folder_with_annotations(folder_root: Path) -> None:
    annotations = {
        "a": {"split": "test"},
        "c": {"intervals": [[30, 40], [10, 20]], "split": "test"},
        "d": {"boxes": [[5, 1, 2, 3, 4], [6, 1, 2, 3, 4], [6, 5, 6, 7.5, 8], [9, 0, 0, 1, 1]]},
    }
    write(folder_root / "annotations.json", json.dumps(annotations))
    test = by_id(load_folder(folder_root, "test"))
    assert sorted(test) == ["a", "c"]
    assert test["c"].intervals == ((10, 20), (30, 40))
    train = by_id(load_folder(folder_root, "train"))
    assert sorted(train) == ["b", "d"]
    assert train["d"].intervals == ((5, 7), (9, 10))  # runs of the boxed frames
    assert train["d"].boxes == {
        5: [(1.0, 2.0, 3.0, 4.0)],
        6: [(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.5, 8.0)],
        9: [(0.0, 0.0, 1.0, 1.0)],
    }
    assert len(load_folder(folder_root, "all")) == 4


@pytest.mark.parametrize(
    ("annotations", "what"),
    [
        ({"c": {"interval": [[1, 2]]}}, "unknown keys ['interval']"),
        ({"zz": {"split": "test"}}, "ids match no video"),
        ({"a": {"intervals": [[1, 2]]}}, "'a' is under normal/"),
        ({"c": {"intervals": [[20, 10]]}}, "'c': intervals[0] must be [start, end] whole numbers "
                                            "with 0 <= start < end (0-based, end exclusive), "
                                            "got [20, 10]"),
        ({"c": {"boxes": [[-1, 0, 0, 1, 1]]}}, "boxes[0] must be [frame, x1, y1, x2, y2] with a "
                                              "whole frame >= 0 and finite corners, got -1"),
        ({"c": {"boxes": [[1.5, 0, 0, 1, 1]]}}, "boxes[0] must be [frame, x1, y1, x2, y2] with a "
                                               "whole frame >= 0 and finite corners, got 1.5"),
        ({"c": {"intervals": [[0, True]]}}, "intervals[0] must be [start, end] whole numbers"),
        ({"c": {"intervals": {"0": 1}}}, "intervals must be a list, each [start, end]"),
        ({"c": {"split": "val"}}, "split: expected 'train' or 'test'"),
    ],
)
def test_folder_bad_annotations(folder_root: Path, annotations: dict, what: str) -> None:
    write(folder_root / "annotations.json", json.dumps(annotations))
    with pytest.raises(DatasetError) as err:
        load_folder(folder_root, "all")
    assert what in str(err.value)
    assert "annotations.json" in str(err.value)


def test_folder_json_syntax_error_has_line(folder_root: Path) -> None:
    write(folder_root / "annotations.json", '{\n  "c": {"split": "test"},\n  "d": {split: 1}\n}\n')
    with pytest.raises(DatasetError, match=r"annotations\.json:3: valid JSON"):
        load_folder(folder_root)


def test_folder_duplicate_stems_are_refused(folder_root: Path) -> None:
    touch(folder_root / "anomalous" / "a.avi")
    with pytest.raises(DatasetError, match="two videos share the id 'a'"):
        load_folder(folder_root)


def test_frames_to_intervals() -> None:
    assert frames_to_intervals([9, 3, 4, 5, 4]) == ((3, 6), (9, 10))
    assert frames_to_intervals([]) == ()


# ------------------------------------------------------- boxes and frames against the video
# Item 19 of the trust issue: a box or frame that cannot be meant as written is refused, naming
# file and line; a box slightly outside the frame is clipped with a warning.


@pytest.mark.parametrize(
    ("corners", "what"),
    [
        ("nan 20 110 220", "finite box corners (no NaN or infinity)"),
        ("10 inf 110 220", "finite box corners (no NaN or infinity)"),
        ("10 20 -inf 220", "finite box corners (no NaN or infinity)"),
        ("110 20 10 220", "a box with xmin < xmax and ymin < ymax (not inverted or empty)"),
        ("10 220 110 20", "a box with xmin < xmax and ymin < ymax (not inverted or empty)"),
        ("10 20 10 220", "a box with xmin < xmax and ymin < ymax (not inverted or empty)"),
    ],
)
def test_vatic_bad_box_is_refused_with_file_and_line(tmp_path: Path, corners: str,
                                                     what: str) -> None:
    line = f'0 {corners} 3 0 0 0 "Person"'
    path = write(tmp_path / "Arrest009.txt", '0 1 2 3 4 0 0 0 0 "Person"\n\n' + line + "\n")
    with pytest.raises(DatasetError) as err:
        read_vatic(path)
    assert str(err.value) == f"{path}:3: {what}, got {line!r}"


def test_vatic_lost_row_needs_no_valid_box(tmp_path: Path) -> None:
    path = write(tmp_path / "v.txt", '0 nan 0 -5 -5 3 1 0 0 "P"\n0 1 2 3 4 4 0 0 0 "P"\n')
    assert read_vatic(path).boxes == {4: [(1.0, 2.0, 3.0, 4.0)]}


def test_write_vatic_round_trip_is_zero_based(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    boxes = [(10, 20, 110, 220), (12.5, 20, 112.5, 221)]  # frames 1 and 2 of 4
    path = write_vatic("Fight01.txt", boxes, start=1, end=3, n_frames=4, label="Fighting")
    assert path == Path("Fight01.txt") and os.listdir() == ["Fight01.txt"]  # no temporary left
    rows = parse_vatic(path)
    assert [(r.frame, r.lost, r.box) for r in rows] == [
        (0, True, (10.0, 20.0, 110.0, 220.0)),  # before the event: the first box, lost
        (1, False, (10.0, 20.0, 110.0, 220.0)),
        (2, False, (12.5, 20.0, 112.5, 221.0)),
        (3, True, (12.5, 20.0, 112.5, 221.0)),  # after it: the last box, lost
    ]
    assert {(r.track_id, r.occluded, r.generated) for r in rows} == {(0, False, False)}
    assert rows[1].text == '0 10 20 110 220 1 0 0 0 "Fighting"'
    ann = read_vatic(path)  # frame 1 stays frame 1: the lost row 0 keeps the file 0-based
    assert ann.frame_base == 0 and ann.intervals == ((1, 3),)
    assert ann.boxes == {1: [(10.0, 20.0, 110.0, 220.0)], 2: [(12.5, 20.0, 112.5, 221.0)]}


@pytest.mark.parametrize("start, end, n_boxes", [(2, 2, 0), (0, 5, 5), (1, 3, 1), (-1, 1, 2)])
def test_write_vatic_refuses_a_span_that_does_not_fit(tmp_path: Path, start: int, end: int,
                                                      n_boxes: int) -> None:
    with pytest.raises(ValueError, match="0 <= start < end <= n_frames and end - start boxes"):
        write_vatic(tmp_path / "v.txt", [(1, 2, 3, 4)] * n_boxes, start, end, 4, "P")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("box", "what"),
    [
        ([3, float("nan"), 0, 5, 5], "must be [frame, x1, y1, x2, y2] with a whole frame >= 0 "
                                     "and finite corners, got nan"),
        ([3, 0, 0, float("inf"), 5], "must be [frame, x1, y1, x2, y2] with a whole frame >= 0 "
                                     "and finite corners, got inf"),
        ([3, 9, 0, 5, 5], "must be a box with xmin < xmax and ymin < ymax"),
        ([3, 0, 5, 5, 5], "must be a box with xmin < xmax and ymin < ymax"),
    ],
)
def test_folder_bad_box_is_refused_with_its_entry(folder_root: Path, box: list,
                                                  what: str) -> None:
    write(folder_root / "annotations.json", json.dumps({"d": {"boxes": [[1, 0, 0, 2, 2], box]}}))
    with pytest.raises(DatasetError) as err:
        load_folder(folder_root, "all")
    assert str(err.value).startswith(f"{folder_root / 'annotations.json'}: 'd': boxes[1] {what}")


VATIC_EDGES = (  # line 1 fine; lines 2-4 stick out of a 320x240 frame by less than 10%
    '0 10 20 110 220 0 0 0 0 "P"\n'
    '0 -5 20 110 220 1 0 0 0 "P"\n'
    '0 10 20 330 250 2 0 0 0 "P"\n'
    '0 -20 -12 340 260 3 0 0 0 "P"\n'
)


def c2l_with_boxes(tmp_path: Path, text: str) -> tuple[VideoRecord, Path]:
    root = tmp_path / "c2l"
    write(root / "readme" / "Test_split_AD.txt", "Arrest001_x264\n")
    box_file = write(root / "readme" / "Txt annotations" / "Arrest001_x264.txt", text)
    return load_crime2local(root, "test")[0], box_file


def test_boxes_slightly_outside_the_frame_are_clipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec, box_file = c2l_with_boxes(tmp_path, VATIC_EDGES)
    with caplog.at_level(logging.WARNING, logger="stmil.datasets.bounds"):
        fitted = fit_to_video(rec, 320, 240, 100)
    assert fitted.boxes == {
        0: [(10.0, 20.0, 110.0, 220.0)],
        1: [(0.0, 20.0, 110.0, 220.0)],
        2: [(10.0, 20.0, 320.0, 240.0)],
        3: [(0.0, 0.0, 320.0, 240.0)],
    }
    assert fitted.intervals == rec.intervals == ((0, 4),)
    assert caplog.messages == [
        f"{box_file}:2: 3 boxes stick out of the 320x240 frame of Arrest001_x264 and were "
        "clipped to it"
    ]
    inside, _ = c2l_with_boxes(tmp_path / "in", VATIC_EDGES.splitlines()[0])
    assert fit_to_video(inside, 320, 240, 1) is inside  # nothing to fix: the same record


@pytest.mark.parametrize(
    "corners",
    [
        "10 20 400 220",  # 80 px (25%) past the right edge
        "-40 20 110 220",  # 40 px (12.5%) before the left edge
        "10 20 110 300",  # 60 px (25%) below the bottom
        "-30 -20 -2 -1",  # within the slack but wholly outside: nothing to clip to
        "321 5 340 30",  # likewise, right of the frame
    ],
)
def test_boxes_outside_the_frame_are_refused_with_file_and_line(tmp_path: Path,
                                                                corners: str) -> None:
    rec, box_file = c2l_with_boxes(tmp_path, f'0 1 2 3 4 5 0 0 0 "P"\n0 {corners} 6 0 0 0 "P"\n')
    box = tuple(float(v) for v in corners.split())
    with pytest.raises(DatasetError) as err:
        fit_to_video(rec, 320, 240, 100)
    assert str(err.value) == (
        f"{box_file}:2: box {box} on frame 6 lies outside the 320x240 frame of Arrest001_x264 "
        "(more than 10% of the frame beyond its edge); fix or remove it"
    )


@pytest.mark.parametrize("frame", [100, 101, 5000])
def test_boxes_beyond_the_last_frame_are_refused(tmp_path: Path, frame: int) -> None:
    rec, box_file = c2l_with_boxes(tmp_path,
                                   f'0 1 2 3 4 0 0 0 0 "P"\n\n0 1 2 3 4 {frame} 0 0 0 "P"\n')
    with pytest.raises(DatasetError) as err:
        fit_to_video(rec, 320, 240, 100)
    assert str(err.value) == (
        f"{box_file}:3: box on frame {frame}, but video Arrest001_x264 (320x240, 100 frames) "
        "ends at frame 99; wrong video, frame rate or frame base?"
    )
    assert fit_to_video(rec, 320, 240, frame + 1).boxes == rec.boxes


@pytest.mark.parametrize(("s", "e"), [(1001, 1100), (2000, 2001), (9000, 12000)])
def test_ucf_interval_after_the_video_is_refused(ucf_root: Path, s: int, e: int) -> None:
    temporal = ucf_root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    text = temporal.read_text().replace("Abuse028_x264.mp4  Abuse  165  240  -1  -1",
                                        f"Abuse028_x264.mp4  Abuse  165  240  {s}  {e}")
    temporal.write_text(text)
    rec = by_id(load_ucf_crime(ucf_root, "test"))["Abuse028_x264"]
    assert rec.intervals == ((164, 240), (s - 1, e))
    with pytest.raises(DatasetError) as err:
        fit_to_video(rec, 320, 240, 1000)
    assert str(err.value) == (
        f"{temporal}:1: anomalous frames [{s - 1}, {e}) start after the end of video "
        "Abuse028_x264 (320x240, 1000 frames); wrong video or frame rate?"
    )


def test_ucf_interval_past_the_end_is_cut_with_a_warning(
    ucf_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    temporal = ucf_root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    rec = by_id(load_ucf_crime(ucf_root, "test"))["Abuse028_x264"]
    assert rec.intervals == ((164, 240),)
    with caplog.at_level(logging.WARNING, logger="stmil.datasets.bounds"):
        fitted = fit_to_video(rec, 320, 240, 200)
    assert fitted.intervals == ((164, 200),)
    assert caplog.messages == [
        f"{temporal}:1 ([164, 240)): anomalous frames end after the last frame (199) of "
        "Abuse028_x264 and were cut there"
    ]


def test_folder_interval_after_the_video_names_its_entry(folder_root: Path) -> None:
    write(folder_root / "annotations.json", json.dumps({"c": {"intervals": [[1, 5], [50, 60]]}}))
    rec = by_id(load_folder(folder_root, "all"))["c"]
    with pytest.raises(DatasetError, match=r"annotations\.json: 'c': intervals\[1\]: anomalous "
                       r"frames \[50, 60\) start after the end of video c \(64x48, 40 frames\)"):
        fit_to_video(rec, 64, 48, 40)


def test_real_ucf_crime_files_load_as_before() -> None:
    real = require_ucf_meta("Anomaly_Test.txt").parent
    train = load_dataset(real, "train")
    test = load_dataset(real, "test")
    assert (len(train), sum(r.label for r in train)) == (1610, 810)
    assert (len(test), sum(r.label for r in test)) == (290, 140)
    assert sum(len(r.intervals) for r in test) == 156
    abuse = by_id(test)["Abuse028_x264"]
    assert abuse.intervals == ((164, 240),)
    temporal = real / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    assert abuse.interval_where == (f"{temporal}:1",)
