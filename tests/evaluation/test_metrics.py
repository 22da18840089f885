"""Metrics: hand-computed cases, sklearn cross-checks and edge cases (see docs/metrics.md)."""

from __future__ import annotations

import ast
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from stmil.cuboids import cuboid_boxes
from stmil.evaluation import metrics as M


def pair_count_auc(scores, labels) -> float:
    """Reference AUC: wins + half the ties over all (anomalous, normal) pairs."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    total = 0.0
    for p, n in product(s[y], s[~y]):
        total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (y.sum() * (~y).sum())


# ------------------------------------------------------------------------------ frame AUC / AP


def test_frame_auc_hand_case() -> None:
    # Pairs (pos, neg): (.35,.1) win, (.35,.4) loss, (.8,.1) win, (.8,.4) win -> 3/4.
    assert M.frame_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_frame_auc_ties_count_half() -> None:
    # (.5,.2) win, (.5,.5) tie = 1/2, (.9,.2) win, (.9,.5) win -> 3.5/4.
    assert M.frame_auc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert M.frame_auc([0.3, 0.3, 0.3], [0, 1, 1]) == pytest.approx(0.5)


def test_frame_ap_hand_case() -> None:
    # Ranked: .8(+) P=1 R=.5; .4(-); .35(+) P=2/3 R=1 -> AP = .5*1 + .5*2/3.
    assert M.frame_ap([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.5 + 1 / 3)


def test_frame_auc_ap_match_sklearn_and_pair_count_on_random_inputs() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.random(200) < 0.3
        s = np.round(rng.random(200) + 0.5 * y, 1)  # rounding makes ties
        assert M.frame_auc(s, y) == pytest.approx(roc_auc_score(y, s))
        assert M.frame_auc(s, y) == pytest.approx(pair_count_auc(s, y))
        assert M.frame_ap(s, y) == pytest.approx(average_precision_score(y, s))


def test_frame_auc_concatenates_per_video_lists() -> None:
    rng = np.random.default_rng(2)
    s = [rng.random(n) for n in (5, 9, 3)]
    y = [np.zeros(5, bool), rng.random(9) < 0.5, np.ones(3, bool)]
    assert M.frame_auc(s, y) == pytest.approx(roc_auc_score(np.concatenate(y), np.concatenate(s)))


@pytest.mark.parametrize("fn", [M.frame_auc, M.frame_ap, M.cuboid_auc])
def test_single_class_raises(fn) -> None:
    with pytest.raises(ValueError, match="only one class"):
        fn([0.1, 0.9, 0.5], [0, 0, 0])  # normal-only input
    with pytest.raises(ValueError, match="only one class"):
        fn([0.1, 0.9], [1, 1])


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="length"):
        M.frame_auc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        M.frame_auc([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        M.frame_auc([0.1, 0.2], [0, 2])


def test_false_alarm_rate_counts_ge_threshold() -> None:
    s = [0.1, 0.5, 0.7, 0.2]
    assert M.false_alarm_rate(s) == pytest.approx(0.5)  # 0.5 >= 0.5 counts
    assert M.false_alarm_rate(s, threshold=0.7) == pytest.approx(0.25)
    assert M.false_alarm_rate(s, threshold=0.71) == 0.0
    with pytest.raises(ValueError, match="needs at least one frame of a normal video"):
        M.false_alarm_rate([])


# ------------------------------------------------------------------------------------ cuboid AUC


def test_cuboid_auc_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.1
    s = rng.random(300) + y
    assert M.cuboid_auc(s, y) == pytest.approx(roc_auc_score(y, s))


# ------------------------------------------------------- masks (heatmaps: tests/test_cuboids.py)


def test_box_mask_uses_pixel_centres() -> None:
    m = M.box_mask(np.array([[1.0, 0.0, 3.0, 2.0]]), width=4, height=3)
    np.testing.assert_array_equal(m, [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    assert not M.box_mask(np.array([[0.6, 0.0, 1.4, 1.0]]), 4, 3).any()  # no centre inside
    both = M.box_mask(np.array([[0, 0, 1, 1], [3, 2, 9, 9]], float), 4, 3)
    assert np.flatnonzero(both).tolist() == [0, 11]
    assert not M.box_mask(np.zeros((0, 4)), 4, 3).any()


def _frames(n: int = 6, w: int = 40, h: int = 30) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(4)
    masks = []
    for _ in range(n):
        x, y = rng.integers(0, w - 10), rng.integers(0, h - 10)
        masks.append(M.box_mask(np.array([[x, y, x + 10, y + 8]], float), w, h))
    return [m.astype(float) for m in masks], masks


@pytest.mark.parametrize("max_pixels", [2_000_000, 500])
def test_pixel_auroc_perfect_and_inverted(max_pixels: int) -> None:
    heat, masks = _frames()
    assert M.pixel_auroc(heat, masks, max_pixels=max_pixels) == 1.0
    assert M.pixel_auroc([1.0 - x for x in heat], masks, max_pixels=max_pixels) == 0.0


def test_pixel_auroc_full_matches_sklearn_and_subsample_is_close_and_seeded() -> None:
    _, masks = _frames(n=20)
    rng = np.random.default_rng(5)
    heat = [rng.random(m.shape) + 0.3 * m for m in masks]
    full = M.pixel_auroc(heat, masks)
    ref = roc_auc_score(
        np.concatenate([m.ravel() for m in masks]), np.concatenate([x.ravel() for x in heat])
    )
    assert full == pytest.approx(ref)
    sub = M.pixel_auroc(heat, masks, max_pixels=8000, seed=0)
    assert sub != full  # really subsampled
    assert sub == pytest.approx(full, abs=0.03)
    assert M.pixel_auroc(heat, masks, max_pixels=8000, seed=0) == sub
    assert M.pixel_auroc(heat, masks, max_pixels=8000, seed=1) != sub


def test_pixel_auroc_errors() -> None:
    heat, masks = _frames(n=2)
    with pytest.raises(ValueError, match="only one class"):
        M.pixel_auroc(heat, [np.zeros_like(m) for m in masks])
    with pytest.raises(ValueError, match="differ"):
        M.pixel_auroc([heat[0][:-1]], [masks[0]])
    counts = "need equal, non-zero numbers of heatmaps and masks"
    with pytest.raises(ValueError, match=f"{counts}: 0 vs 0"):
        M.pixel_auroc([], [])
    with pytest.raises(ValueError, match=f"{counts}: 2 vs 1"):
        M.pixel_auroc(heat, masks[:1])


# ------------------------------------------------------------------------------ pointing accuracy


def test_top_cuboid_boxes_ties_take_first_row_major() -> None:
    cub = cuboid_boxes(20, 20, 2)
    s = np.array([[0.1, 0.9, 0.9, 0.2], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.3]])
    np.testing.assert_array_equal(M.top_cuboid_boxes(s, cub), cub[[1, 0, 3]])


def _sigma(p: float, n: int) -> float:
    """Standard deviation of a fraction of ``n`` independent draws with success rate ``p``."""
    return float(np.sqrt(p * (1 - p) / n))


def test_top_cuboid_boxes_random_ties_are_uniform_over_the_tied_and_seeded() -> None:
    cub = cuboid_boxes(70, 70, 7)
    n = 4900
    flat = np.full((n, 49), 0.5)
    picks = M.top_cuboid_boxes(flat, cub, np.random.default_rng(0))
    idx = np.array([np.flatnonzero((cub == b).all(axis=1))[0] for b in picks])
    counts = np.bincount(idx, minlength=49)
    # Each cuboid is drawn with p = 1/49: ~100 +- 9.9 times; 5 sigma bounds every one of 49.
    assert counts.min() >= 100 - 5 * 9.9 and counts.max() <= 100 + 5 * 9.9
    np.testing.assert_array_equal(M.top_cuboid_boxes(flat, cub, np.random.default_rng(0)), picks)
    assert not np.array_equal(M.top_cuboid_boxes(flat, cub, np.random.default_rng(1)), picks)
    # Only tied maxima are drawn: cuboids 3 and 40 share the top score.
    two = np.zeros((1000, 49))
    two[:, [3, 40]] = 1.0
    got = M.top_cuboid_boxes(two, cub, np.random.default_rng(0))
    is3, is40 = (got == cub[3]).all(axis=1), (got == cub[40]).all(axis=1)
    assert (is3 | is40).all()
    assert abs(is3.mean() - 0.5) <= 5 * _sigma(0.5, 1000)
    # Without an rng, ties go to the first in row-major order.
    np.testing.assert_array_equal(M.top_cuboid_boxes(two[:2], cub), cub[[3, 3]])


def test_constant_map_points_at_chance_in_compute_metrics() -> None:
    """The grid-1 baseline's map is constant: evaluation breaks ties at random (seeded), so its
    pointing accuracy is chance, 1/49 for a GT box inside one cuboid, not 0 (ties to the
    top-left cuboid) nor 1 (ties to the box's cuboid)."""
    from stmil.datasets.record import VideoRecord
    from stmil.evaluation.evaluate import compute_metrics
    from stmil.features.store import FeatureMeta, VideoFeatures

    n_frames, clip = 4096, 16
    meta = FeatureMeta(fps=30.0, source_fps=30.0, n_frames=n_frames, width=70, height=70,
                       grid=7, clip_len=clip, stride=clip, n_clips=n_frames // clip, size=224,
                       endpoint="Mixed_4e", tail="drop", channels=1)
    box = [32.0, 32.0, 38.0, 38.0]  # inside cuboid 24, the centre one (10 x 10 pixels each)
    anomalous = VideoRecord("A", 1, intervals=((0, n_frames),),
                            boxes={f: [box] for f in range(n_frames)})
    videos = [VideoFeatures(anomalous, np.zeros(0), meta),
              VideoFeatures(VideoRecord("N", 0), np.zeros(0), meta)]
    maps = [np.full((meta.n_clips, 49), 0.7), np.full((meta.n_clips, 49), 0.2)]
    got = compute_metrics(videos, maps)["pointing_accuracy"]
    assert abs(got - 1 / 49) <= 4 * _sigma(1 / 49, n_frames)  # 4 sigma = 0.0088
    assert compute_metrics(videos, maps)["pointing_accuracy"] == got  # seeded: reproducible


def test_pointing_accuracy_hand_case() -> None:
    top = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [10, 10, 20, 20]], float)
    gt = [
        np.array([[8.0, 8.0, 30.0, 30.0]]),  # overlaps: hit
        np.array([[50.0, 50.0, 60.0, 60.0], [12.0, 0.0, 20.0, 5.0]]),  # no overlap: miss
        np.zeros((0, 4)),  # no GT box: not counted
        np.array([[0.0, 0.0, 10.0, 10.0]]),  # touches at a corner only, area 0: miss
    ]
    assert M.pointing_accuracy(top, gt) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one frame"):
        M.pointing_accuracy(top[2:3], gt[2:3])
    with pytest.raises(ValueError, match="4 top boxes but 2 frames of GT boxes"):
        M.pointing_accuracy(top, gt[:2])


def test_metrics_module_has_no_torch_or_io() -> None:
    tree = ast.parse(Path(M.__file__).read_text())
    imported = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    imported |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert not imported & {"torch", "os", "pathlib", "json"}
    assert "open(" not in Path(M.__file__).read_text()
