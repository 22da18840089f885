"""The cuboid grid's geometry: a cuboid map drawn back onto the frame, without loading torch.

(Pooling and boxes are checked against the extractor in tests/features/test_extract.py.)
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stmil.cuboids import cuboid_boxes, frame_heatmap
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


def test_geometry_and_metrics_do_not_load_torch() -> None:
    code = ("import sys, stmil.cuboids, stmil.evaluation.metrics; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
