"""Liu & Ma's UCF-Crime boxes: 1-based frames, 320x240 scaling, no globals, interpolation."""

from __future__ import annotations

import collections
import pickle

import pytest

from stmil.datasets import DatasetError, VideoRecord
from stmil.datasets.liu_ma import attach_liu_ma, frame_boxes, read_liu_ma
from tests.conftest import require_ucf_meta

REAL = "Test_annotation.pkl"  # in the shared ucf-crime-meta folder


@pytest.mark.parametrize("protocol", [0, 4])
def test_frames_are_one_based_and_boxes_scaled(tmp_path, protocol):
    ann = {"Shoplifting010_x264": [["/x/Shoplifting010_x264/image_0033.jpg", 10, 20, 30, 60],
                                   ["/x/Shoplifting010_x264/image_0001.jpg", 0, 0, 320, 240]]}
    path = tmp_path / "test_ann.pkl"
    path.write_bytes(pickle.dumps(ann, protocol=protocol))
    rows = read_liu_ma(path)
    assert rows == {"Shoplifting010_x264": [(0, (0.0, 0.0, 320.0, 240.0)),
                                            (32, (10.0, 20.0, 30.0, 60.0))]}
    boxes = frame_boxes(rows["Shoplifting010_x264"], 640, 480)  # twice the annotated size
    assert boxes == {0: [(0.0, 0.0, 640.0, 480.0)], 32: [(20.0, 40.0, 60.0, 120.0)]}


def test_no_interpolation_unless_asked_and_only_across_short_gaps():
    rows = [(0, (0.0, 0.0, 16.0, 16.0)), (16, (16.0, 0.0, 32.0, 16.0)),
            (100, (0.0, 0.0, 8.0, 8.0))]
    assert sorted(frame_boxes(rows, 320, 240)) == [0, 16, 100]
    boxes = frame_boxes(rows, 320, 240, interpolate=True)
    assert boxes[4] == [(4.0, 0.0, 20.0, 16.0)]  # a quarter of the way from 0 to 16
    assert 50 not in boxes  # the gap 16 -> 100 is longer than 32 frames: left empty
    assert len(boxes) == 17 + 1


def test_attach_drops_boxes_after_the_described_frames():
    rec = VideoRecord("v", 1)
    out = attach_liu_ma(rec, [(3, (0.0, 0.0, 10.0, 10.0)), (50, (0.0, 0.0, 10.0, 10.0))],
                        320, 240, 48, "a.pkl")
    assert list(out.boxes) == [3] and out.box_where[3] == ("a.pkl['v'] frame 4 (1-based)",)
    assert attach_liu_ma(rec, None, 320, 240, 48, "a.pkl") is rec


class Boom:
    def __reduce__(self):
        return (eval, ("1",))  # never run: the pickle is refused first


@pytest.mark.parametrize("obj, needle", [
    (collections.OrderedDict(a=[]), "names collections.OrderedDict"),
    ({"v": [Boom()]}, "names builtins.eval"),
    ([1, 2], "expected a dict from video id to boxes, got list"),
    ({"v": [["/a/frame_12.png", 1, 2, 3, 4]]}, "['v'][0]: expected [.../image_NNNN.jpg"),
    ({"v": [["/a/image_0000.jpg", 1, 2, 3, 4]]}, "NNNN >= 1 (1-based)"),
    ({"v": [["/a/image_0005.jpg", 5, 2, 3, 4]]}, "box (5, 2, 3, 4) is empty or inverted"),
])
def test_refusals_name_the_file(tmp_path, capsys, obj, needle):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DatasetError, match="bad.pkl") as e:
        read_liu_ma(path)
    assert needle in str(e.value)
    assert "executed" not in capsys.readouterr().out  # nothing of the pickle ran


def test_the_published_test_annotation():
    rows = read_liu_ma(require_ucf_meta(REAL))
    assert len(rows) == 140 and sum(map(len, rows.values())) == 3102
    # Its first entry: image_0861.jpg -> 0-based frame 860 (the list is sorted by frame).
    assert (860, (77.0, 104.0, 141.0, 200.0)) in rows["Shoplifting010_x264"]
    assert all(0 <= b[0] < b[2] <= 320 and 0 <= b[1] < b[3] <= 240
               for r in rows.values() for _, b in r)


def test_published_boxes_lie_inside_the_published_temporal_annotation():
    """Every one of the 3,102 boxes, read 1-based, falls inside Sultani's anomalous frames of
    its video (read by the UCF-Crime loader): the two files agree on frames. An off-by-one
    either way puts 1 (one frame earlier) or 3 (one later) boxes outside, so this catches it."""
    from stmil.datasets.ucf_crime import load_ucf_crime

    real = require_ucf_meta(REAL)
    records = {r.video_id: r for r in load_ucf_crime(real.parent, "test")}
    rows = read_liu_ma(real)
    assert set(rows) <= set(records) and all(records[v].label == 1 for v in rows)
    outside = [(v, f) for v, r in rows.items() for f, _ in r
               if not any(s <= f < e for s, e in records[v].intervals)]
    assert outside == []


@pytest.mark.parametrize("coords, needle", [
    ([float("nan"), 2, 3, 4], "x1 must be finite numbers"),
    ([1, 2, float("inf"), "4"], "x2, y2 must be finite numbers"),
])
def test_a_bad_coordinate_is_named_not_the_frame_number(tmp_path, coords, needle):
    """Issue 22 item 26: a NaN coordinate was reported as a bad ``image_NNNN`` number."""
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"v": [["/a/image_0005.jpg", *coords]]}))
    with pytest.raises(DatasetError) as e:
        read_liu_ma(path)
    assert needle in str(e.value) and "['v'][0]" in str(e.value)
    assert "NNNN" not in str(e.value)
