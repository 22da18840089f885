"""The time geometry (``stmil.timeline``): clip frame ranges, segments, frame <-> clip, frame
scores from clip scores and frame labels from intervals, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from stmil.timeline import (
    clip_frame_ranges,
    frame_labels,
    frame_scores_from_clips,
    frame_to_clip,
    segment_bounds,
    segment_clip_ranges,
)

# --- clips <-> source frames -----------------------------------------------------------------


def test_clip_frame_ranges_hand_values():
    np.testing.assert_array_equal(
        clip_frame_ranges(3, 16, 16, 30.0, None, 50), [[0, 16], [16, 32], [32, 48]])
    # padded tail clip [48, 64) ends at the video's end
    np.testing.assert_array_equal(
        clip_frame_ranges(4, 16, 16, 30.0, None, 50), [[0, 16], [16, 32], [32, 48], [48, 50]])
    np.testing.assert_array_equal(
        clip_frame_ranges(3, 16, 8, 30.0, None, 50), [[0, 16], [8, 24], [16, 32]])
    # 30 -> 15 fps: sampled frame k is source frame 2k; clip 1 = samples 16..31 = src 32..62
    np.testing.assert_array_equal(
        clip_frame_ranges(2, 16, 16, 30.0, 15.0, 64), [[0, 31], [32, 63]])
    # 25 -> 10 fps: sample k is floor(2.5 k); clip 1 = samples 16..31 -> src 40..77
    np.testing.assert_array_equal(
        clip_frame_ranges(2, 16, 16, 25.0, 10.0, 80), [[0, 38], [40, 78]])
    assert clip_frame_ranges(0, 16, 16, 30.0, None, 10).shape == (0, 2)


@pytest.mark.parametrize(("ranges", "n_frames", "expected"), [
    ([[0, 16], [16, 32]], 40, [0] * 16 + [1] * 24),  # drop: the 8 tail frames go to clip 1
    ([[0, 16], [16, 32], [32, 40]], 40, [0] * 16 + [1] * 16 + [2] * 8),  # pad: to clip 2
    ([[0, 16], [8, 24], [16, 32]], 37, [0] * 8 + [1] * 8 + [2] * 21),  # stride 8: latest start
    ([[3, 5]], 7, [0] * 7),  # frames before the first clip take the first
])
def test_frame_to_clip_hand_cases(ranges, n_frames, expected):
    assert frame_to_clip(np.array(ranges), n_frames).tolist() == expected


# --- clips -> segments ---------------------------------------------------------------------


def test_segment_bounds_10_clips_hand_values():
    # 10 * k / 32 = 0.3125 k, rounded half to even (k=8: 2.5 -> 2, k=24: 7.5 -> 8).
    expected = [0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5,
                5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 10, 10]  # fmt: skip
    np.testing.assert_array_equal(segment_bounds(10), expected)


def test_segment_bounds_32_clips_is_identity():
    np.testing.assert_array_equal(segment_bounds(32), np.arange(33))


def test_segment_bounds_100_clips_hand_values():
    # 100 * k / 32 = 3.125 k: 12.5 -> 12, 37.5 -> 38, 62.5 -> 62, 87.5 -> 88.
    expected = [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 31, 34, 38, 41, 44, 47, 50,
                53, 56, 59, 62, 66, 69, 72, 75, 78, 81, 84, 88, 91, 94, 97, 100]  # fmt: skip
    np.testing.assert_array_equal(segment_bounds(100), expected)


def test_segment_clip_ranges_short_video_takes_one_clip():
    ranges = segment_clip_ranges(10)
    assert ranges.shape == (32, 2)
    assert (ranges[:, 1] - ranges[:, 0] >= 1).all()
    # bounds 0, 0, 1, 1, 1, 2 ...: segment 0 is empty -> clip 0; segment 2 is [1, 1) -> clip 1.
    np.testing.assert_array_equal(ranges[:4], [[0, 1], [0, 1], [1, 2], [1, 2]])
    # the last bounds are 9, 10, 10: segment 31 is [10, 10) -> clip min(10, 9) = 9.
    np.testing.assert_array_equal(ranges[-2:], [[9, 10], [9, 10]])
    np.testing.assert_array_equal(segment_clip_ranges(1, 4), [[0, 1]] * 4)


def test_segment_bounds_rejects_empty_video():
    with pytest.raises(ValueError, match="at least one clip"):
        segment_bounds(0)


# --- clip scores -> frame scores; intervals -> frame labels --------------------------------


def test_frame_labels_half_open_and_clipped() -> None:
    y = frame_labels([(2, 4), (7, 12), (-3, 1)], 10)
    assert np.flatnonzero(y).tolist() == [0, 2, 3, 7, 8, 9]
    assert not frame_labels([], 5).any()
    with pytest.raises(ValueError, match=r"interval end before start: \[4, 2\)"):
        frame_labels([(4, 2)], 5)


def test_frame_scores_clip_tails() -> None:
    # Frames 0-1 precede the first clip, 6-8 follow the last one.
    out = frame_scores_from_clips([0.3, 0.7], [[2, 4], [4, 6]], 9)
    np.testing.assert_allclose(out, [0.3, 0.3, 0.3, 0.3, 0.7, 0.7, 0.7, 0.7, 0.7])


def test_frame_scores_overlap_takes_max_and_gap_takes_previous() -> None:
    out = frame_scores_from_clips([0.9, 0.1], [[0, 4], [2, 6]], 8)
    np.testing.assert_allclose(out, [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    out = frame_scores_from_clips([0.2, 0.8], [[0, 2], [4, 6]], 7)
    np.testing.assert_allclose(out, [0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8])


def test_frame_scores_standard_16_frame_clips() -> None:
    n_frames, clip = 50, 16  # 3 clips cover 0..47, frames 48, 49 are the tail
    ranges = np.array([[k * clip, (k + 1) * clip] for k in range(3)])
    out = frame_scores_from_clips(np.array([0.1, 0.5, 0.9]), ranges, n_frames)
    assert out.shape == (n_frames,)
    np.testing.assert_allclose(out, np.repeat([0.1, 0.5, 0.9, 0.9], [16, 16, 16, 2]))


RANGES = r"clip ranges must satisfy 0 <= start < end <= n_frames \(5\)"


@pytest.mark.parametrize(
    ("scores", "ranges", "n", "match"),
    [
        ([], np.zeros((0, 2)), 5, "need n_clips >= 1 scores and ranges, got 0 and 0"),
        ([0.1], [[0, 6]], 5, RANGES),
        ([0.1], [[3, 3]], 5, RANGES),
        ([0.1], [[-1, 3]], 5, RANGES),
        ([0.1, 0.2], [[0, 2]], 5, "need n_clips >= 1 scores and ranges, got 2 and 1"),
        ([0.1], [[0, 2]], 0, "n_frames must be positive, got 0"),
    ],
)
def test_frame_scores_bad_inputs(scores, ranges, n, match) -> None:
    with pytest.raises(ValueError, match=match):
        frame_scores_from_clips(scores, ranges, n)

