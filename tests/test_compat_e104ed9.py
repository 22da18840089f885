"""Files written by stmil at commit e104ed9 (tests/fixtures/e104ed9, made with that commit's
code) are read by the current code, and score bit for bit as that code scored them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stmil.features.store import load_features, meta_motion
from stmil.mil.detector import Detector
from stmil.score import read_scores

FIXTURES = Path(__file__).parent / "fixtures" / "e104ed9"
VIDEOS = ("Fire001_x264", "Normal_Videos_003_x264")


@pytest.mark.parametrize("run,key", [("topk", "run"), ("paper", "paper")])
def test_old_runs_score_old_features_bit_for_bit(run, key):
    detector = Detector.load(FIXTURES / "runs" / run)
    saved = np.load(FIXTURES / "maps.npz")
    for vid in VIDEOS:
        x, meta = load_features(FIXTURES / "feats", vid)
        detector.check_features(meta, vid)
        np.testing.assert_array_equal(detector.maps(x, meta_motion(meta), vid),
                                      saved[f"{key}/{vid}"])
    assert detector.config.grid == 2 and detector.config.feature_grid == 2
    assert (detector.config.gate, detector.config.motion) == (
        ("memory", "gate") if run == "topk" else ("none", "none"))


def test_old_scores_files_are_read():
    for vid in VIDEOS:
        s = read_scores(FIXTURES / "scores" / f"{vid}.scores.json")
        assert s["clip_maps"].shape == (3, 4) and s["n_frames"] == 48
        maps = np.load(FIXTURES / "maps.npz")[f"run/{vid}"]
        np.testing.assert_allclose(s["clip_maps"], maps, atol=5e-7)  # rounded to 6 places
