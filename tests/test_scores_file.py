"""The one reader of ``<id>.scores.json`` (:func:`stmil.score.read_scores`) checks every field
(issue 22 items 19 and 26): a hand-edited file is refused in one message naming the field."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stmil.features.store import FeatureError
from stmil.score import read_scores


def good() -> dict:
    """A scores file of 4 clips of 8 frames (32 frames), grid 2, written by hand."""
    maps = [[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]], [[0.0, 1.0], [0.2, 0.2]],
            [[0.9, 0.1], [0.1, 0.1]]]
    return {"source": "/v/a.mp4", "n_frames": 32, "fps": 30.0, "width": 64, "height": 48,
            "grid": 2, "model_grid": 2, "threshold": None,
            "clip_ranges": [[8 * k, 8 * k + 8] for k in range(4)], "clip_maps": maps,
            "frame_scores": [max(max(r) for r in maps[f // 8]) for f in range(32)],
            "boxes": [[0.0, 0.0, 32.0, 24.0]] * 32}


def write(tmp_path, data: dict):
    path = tmp_path / "a.scores.json"
    path.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
    return path


def test_a_good_file_is_read(tmp_path):
    s = read_scores(write(tmp_path, good()))
    assert s["clip_maps"].shape == (4, 4) and s["clip_maps"].dtype == np.float32
    assert s["clip_ranges"].tolist() == [[0, 8], [8, 16], [16, 24], [24, 32]]
    assert s["clip_maps"][1].tolist() == pytest.approx([0.5, 0.6, 0.7, 0.8])


MAPS = ("clip_maps must be a list of 2 x 2 grids of scores from 0 to 1 (no NaN or infinite "
        "values), one per clip, got ")


def edit(**changes) -> dict:
    return good() | changes


@pytest.mark.parametrize("data, needle", [
    (edit(clip_ranges=[[8, 0], [8, 16], [16, 24], [24, 32]]),
     "clip_ranges must be [start, end) frame ranges with 0 <= start < end <= n_frames (32); "
     "clip 0, got [8, 0]"),
    (edit(clip_ranges=[[0, 8], [8, 16], [16, 24], [24, 33]]), "clip 3, got [24, 33]"),
    (edit(clip_maps=[[[5.0, 0.2], [0.3, 0.4]]] + good()["clip_maps"][1:]),
     f"{MAPS}5.0"),
    (edit(width=0), "width must be a whole number >= 1, got 0"),
    (edit(n_frames=-1), "n_frames must be a whole number >= 1, got -1"),
    (edit(height=2.5), "height must be a whole number >= 1, got 2.5"),
    (edit(fps=0), "fps must be a positive number"),
    (edit(frame_scores=[0.5] * 31), "frame_scores must be a list of n_frames (32) scores"),
    (edit(frame_scores=[1.5] * 32), "frame_scores must be a list of n_frames (32) scores from 0 "
                                    "to 1 (no NaN or infinite values), got 1.5"),
    (edit(boxes=[[0, 0, 1]] * 32), "boxes must be n_frames (32) boxes of 4 finite numbers, got "
                                   "[0, 0, 1]"),
    (edit(threshold=2), "threshold must be null or a number from 0 to 1, got 2"),
    (edit(clip_maps=good()["clip_maps"][:3]), "clip_ranges must be 3 [start, end] pairs"),
    (edit(clip_maps=[[[0.1, 0.2, 0.3]]] * 4), "clip_maps must be a list of 2 x 2 grids"),
    # item 26: a grid given as a string is named as such, not as a grid-7-vs-grid-7 mismatch
    (edit(grid="2"), "grid must be a whole number >= 1, got '2'"),
    (edit(model_grid="2"), "model_grid must be a whole number >= 1, got '2'"),
    # item 26: NaN map values are named as NaN, not as a count of clip maps and ranges
    (edit(clip_maps=[[[math.nan, 0.2], [0.3, 0.4]]] + good()["clip_maps"][1:]),
     f"{MAPS}nan"),
])
def test_a_hand_edited_file_is_refused_naming_the_field(tmp_path, data, needle):
    path = write(tmp_path, data)
    with pytest.raises(FeatureError) as e:
        read_scores(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and needle in msg, msg
    assert msg.endswith("; score the video again with stmil score") and "\n" not in msg
