"""The cuboid grid's geometry: box overlaps, cuboid labels, predicted boxes and a cuboid map
drawn back onto the frame, without loading torch.

(Pooling and boxes are checked against the extractor in tests/features/test_extract.py.)
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stmil.cuboids import (
    box_overlap_fraction,
    cuboid_boxes,
    cuboid_labels,
    frame_heatmap,
    predicted_boxes,
)
from stmil.evaluation.metrics import box_mask


def test_frame_heatmap_nearest_hand_case() -> None:
    hm = frame_heatmap(np.array([1.0, 2.0, 3.0, 4.0]), width=4, height=2)
    np.testing.assert_array_equal(hm, [[1, 1, 2, 2], [3, 3, 4, 4]])
    # G=2 on a 5x3 frame: the edges are x=2.5 and y=1.5, pixel 2's column centre and row 1's
    # centre; x2/y2 are exclusive, so those pixels go right and down.
    hm = frame_heatmap(np.array([1.0, 2.0, 3.0, 4.0]), width=5, height=3)
    np.testing.assert_array_equal(hm, [[1, 1, 2, 2, 2],
                                       [3, 3, 4, 4, 4],
                                       [3, 3, 4, 4, 4]])
    assert hm.dtype == np.float64
    # a (G, G) map is the same as its row-major (G*G,) form
    np.testing.assert_array_equal(frame_heatmap(np.array([[1.0, 2.0], [3.0, 4.0]]), 5, 3), hm)
    with pytest.raises(ValueError, match="G\\*G"):
        frame_heatmap(np.zeros(5), 4, 4)


@pytest.mark.parametrize(("w", "h", "g"), [(37, 23, 7), (35, 21, 2), (320, 240, 7), (10, 10, 1)])
def test_frame_heatmap_fills_each_cuboid_box_exactly(w: int, h: int, g: int) -> None:
    scores = np.arange(g * g, dtype=float)
    masks = np.stack([box_mask(b[None], w, h) for b in cuboid_boxes(w, h, g)])
    np.testing.assert_array_equal(masks.sum(axis=0), 1)  # the boxes tile the frame
    expected = (masks * scores[:, None, None]).sum(axis=0)
    np.testing.assert_array_equal(frame_heatmap(scores, w, h), expected)


def test_box_overlap_fraction_hand_cases() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], float)
    b = np.array([[5, 5, 15, 15], [20, 20, 30, 30], [-5, -5, 20, 20], [0, 0, 5, 5]], float)
    expected = [[0.25, 0.0, 1.0, 0.25], [1.0, 0.0, 1.0, 0.0]]
    np.testing.assert_allclose(box_overlap_fraction(a, b), expected)
    # Divided by the area of boxes_a: the small box is fully inside the big one.
    np.testing.assert_allclose(box_overlap_fraction(b[3:], a[:1]), [[1.0]])
    assert box_overlap_fraction(a, np.zeros((0, 4))).shape == (2, 0)
    with pytest.raises(ValueError, match="positive area"):
        box_overlap_fraction([[1, 1, 1, 5]], a)


def test_cuboid_labels_exact_quarter_is_positive_less_is_not() -> None:
    cub = cuboid_boxes(70, 70, 7)  # 10 x 10 pixel cuboids
    pos = cuboid_labels(cub, [np.array([[0.0, 0.0, 5.0, 5.0]])])  # exactly 25% of cuboid 0
    assert np.flatnonzero(pos).tolist() == [0]
    neg = cuboid_labels(cub, [np.array([[0.0, 0.0, 5.0, 4.9]])])  # 24.5%
    assert not neg.any()
    # A 10x10 box centred on a grid corner covers 25% of each of four cuboids.
    four = cuboid_labels(cub, [np.array([[5.0, 5.0, 15.0, 15.0]])])
    assert np.flatnonzero(four).tolist() == [0, 1, 7, 8]
    assert not cuboid_labels(cub, [np.array([[5.0, 5.0, 15.0, 15.0]])], overlap=0.26).any()


@pytest.mark.parametrize(("w", "h", "k"), [(320, 240, 8), (100, 240, 24)])
def test_cuboid_labels_quarter_boundary_on_non_divisible_frame(w: int, h: int, k: int) -> None:
    cub = cuboid_boxes(w, h, 7)  # float edges; for 100x240 the quarter computes to 0.2499999...
    x1, y1, x2, y2 = cub[k]
    quarter = np.array([[x1, y1, x1 + (x2 - x1) / 2, y1 + (y2 - y1) / 2]])
    assert np.flatnonzero(cuboid_labels(cub, [quarter])).tolist() == [k]


def test_cuboid_labels_union_over_frames_and_empty_frames() -> None:
    cub = cuboid_boxes(70, 70, 7)
    frames = [np.zeros((0, 4)), np.array([[60.0, 60.0, 70.0, 70.0]]), np.zeros((0, 4))]
    assert np.flatnonzero(cuboid_labels(cub, frames)).tolist() == [48]
    frames.append(np.array([[0.0, 0.0, 10.0, 10.0]]))
    assert np.flatnonzero(cuboid_labels(cub, frames)).tolist() == [0, 48]
    assert not cuboid_labels(cub, []).any()


def test_predicted_boxes_top_cuboid_or_union_over_threshold() -> None:
    # Row 0: nothing reaches 0.5, so the top cuboid; row 1: cuboids 0 and 2, the left column.
    maps = np.array([[0.1, 0.3, 0.2, 0.0], [0.9, 0.1, 0.95, 0.2]])
    small = cuboid_boxes(4, 4, 2)
    np.testing.assert_array_equal(predicted_boxes(maps, small, 0.5), [small[1], [0, 0, 2, 4]])
    np.testing.assert_array_equal(predicted_boxes(maps, small), [small[1], small[2]])


def test_geometry_and_metrics_do_not_load_torch() -> None:
    code = ("import sys, stmil.cuboids, stmil.timeline, stmil.evaluation.metrics; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
