"""Overlay videos: sizes, frame counts, heat where the map is hot, GT boxes in green."""

from __future__ import annotations

import av
import numpy as np
import pytest

from stmil.cuboids import cuboid_boxes
from stmil.overlay import (
    GT_COLOR,
    HEADER_H,
    STRIP_H,
    label_image,
    no_localization_text,
    panel_size,
    render_overlay,
)
from stmil.timeline import frame_scores_from_clips, frame_to_clip
from tests.conftest import ramp_frames, write_video

N, H, W, G = 40, 48, 64, 4
HOT = (1, 2)  # (row, col) of the hot cuboid in clip 1
GT_BOX = [4.0, 28.0, 28.0, 44.0]  # source pixels; bottom-left, away from the hot cuboid
GT_FRAMES = range(16, 32)


def _scores(hot: bool = True) -> dict:
    """A scores dict like ``stmil.score.score_features`` makes: 2 clips, clip 1 hot."""
    ranges = np.array([[0, 16], [16, 32]])
    maps = np.full((2, G, G), 0.05)
    if hot:
        maps[1][HOT] = 0.95
    flat = maps.reshape(2, -1)
    boxes = cuboid_boxes(W, H, G)[flat.argmax(1)][frame_to_clip(ranges, N)]
    return {"n_frames": N, "width": W, "height": H, "grid": G, "model_grid": G,
            "clip_ranges": ranges.tolist(), "clip_maps": maps.tolist(),
            "frame_scores": frame_scores_from_clips(flat.max(1), ranges, N).tolist(),
            "boxes": boxes.tolist()}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("overlay") / "v.mkv", ramp_frames(N, H, W))


def _decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _cell(img: np.ndarray, row: int, col: int, pw: int, ph: int, margin: int = 4) -> np.ndarray:
    """Interior pixels ``(h, w, 3)`` of cuboid (row, col) in the panel of an output frame."""
    y0, y1 = HEADER_H + row * ph // G + margin, HEADER_H + (row + 1) * ph // G - margin
    x0, x1 = col * pw // G + margin, (col + 1) * pw // G - margin
    return img[y0:y1, x0:x1].astype(float)


def _colourfulness(px: np.ndarray) -> float:
    return float((px.max(-1) - px.min(-1)).mean())


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_overlay_renders_heat_boxes_and_timeline(video, tmp_path, suffix):
    gt = {f: [GT_BOX] for f in GT_FRAMES}
    out = render_overlay(video, _scores(), tmp_path / f"o{suffix}", gt_boxes=gt, scale=128)
    assert out.is_file() and out.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left behind
    frames = _decode(out)
    pw, ph = panel_size(W, H, 128)
    step = 2 if suffix == ".gif" else 1
    assert len(frames) == N // step
    assert frames[0].shape == (HEADER_H + ph + STRIP_H, pw, 3)
    img = frames[20 // step]  # source frame 20: clip 1, GT box present
    hot, cold = _cell(img, *HOT, pw, ph), _cell(img, 0, 0, pw, ph)
    assert _colourfulness(hot) > _colourfulness(cold) + 40
    calm = _cell(frames[4 // step], *HOT, pw, ph)  # clip 0: the same cuboid is cold
    assert _colourfulness(calm) < 30
    s = pw / W  # GT box left edge (2 px wide), halfway down
    r, c = HEADER_H + int((GT_BOX[1] + GT_BOX[3]) / 2 * s), int(GT_BOX[0] * s)
    red, green, blue = img[r, c].astype(int)
    assert green > 180 and red < 90 and blue < 90
    if suffix == ".gif":  # a palette colour comes out exactly (nearest colour, no dither)
        assert tuple(img[r, c]) == GT_COLOR
    no_gt = frames[4 // step][r, c].astype(int)  # no GT box on frame 4
    assert not (no_gt[1] > 180 and no_gt[0] < 90 and no_gt[2] < 90)
    strip = img[HEADER_H + ph:].astype(int)
    cursor_x = 20 * pw // N
    assert (strip[:, cursor_x] > 200).all(-1).mean() > 0.8  # white cursor at the frame
    assert (strip[:, cursor_x + 6] > 200).all(-1).mean() < 0.2


def test_overlay_side_by_side_baseline_and_max_frames(video, tmp_path):
    out = render_overlay(video, _scores(), tmp_path / "o.gif", baseline=_scores(hot=False),
                         max_frames=12, scale=128)
    frames = _decode(out)
    pw, ph = panel_size(W, H, 128)
    assert len(frames) == 12
    assert frames[0].shape == (HEADER_H + ph + STRIP_H, 2 * pw, 3)
    img = frames[10]  # source frame 20 (every 2nd frame)
    left, right = _cell(img, *HOT, pw, ph), _cell(img[:, pw:], *HOT, pw, ph)
    assert _colourfulness(left) > _colourfulness(right) + 40


def test_overlay_refuses_bad_requests(video, tmp_path):
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        render_overlay(video, _scores(), tmp_path / "o.avi")
    other = dict(_scores(), n_frames=N + 1)
    with pytest.raises(ValueError, match="not the same video"):
        render_overlay(video, _scores(), tmp_path / "o.mp4", baseline=other)
    assert not list(tmp_path.iterdir())


def test_label_image_tab_and_white_text_on_the_background():
    bg, tab = (22, 22, 22), (0, 200, 255)
    img = label_image("method (grid 7)", 240, HEADER_H, tab)
    assert img.shape == (HEADER_H, 240, 3) and img.dtype == np.uint8
    assert (img[2:HEADER_H - 2, 2:6] == tab).all()  # the coloured tab
    assert (img[:, :2] == bg).all() and (img[:2, :10] == bg).all() and (img[:, 6:10] == bg).all()
    text = img[:, 10:]
    white = (text > 200).all(-1)
    assert white.any() and white[:, -100:].sum() == 0  # the text starts at x=10, short of the end
    assert ((text == bg).all(-1) | (text.min(-1) == text.max(-1))).all()  # grey text, no colour
    blank = label_image("", 120, HEADER_H, tab)
    assert (blank[:, 10:] == bg).all()


def _is_cyan(px: np.ndarray) -> np.ndarray:
    return (px[..., 0] < 60) & (px[..., 1] > 200) & (px[..., 2] > 200)


def test_a_tie_is_no_localization_no_box_and_a_note(video, tmp_path):
    """The grid-1 baseline's map is constant: argmax picks cuboid 0 (the top-left, "in the
    sky"), which is a tie, not a localization; its panel draws no predicted box but the note."""
    ranges = np.array([[0, 16], [16, 32]])
    flat = np.array([[0.2], [0.9]]).repeat(G * G, axis=1)  # a grid-1 map spread over the grid
    boxes = cuboid_boxes(W, H, G)[flat.argmax(1)][frame_to_clip(ranges, N)]  # cuboid 0
    grid1 = dict(_scores(), model_grid=1, clip_maps=flat.reshape(2, G, G).tolist(),
                 frame_scores=frame_scores_from_clips(flat.max(1), ranges, N).tolist(),
                 boxes=boxes.tolist())
    out = render_overlay(video, _scores(), tmp_path / "o.gif", baseline=grid1, scale=128)
    frames = _decode(out)
    pw, ph = panel_size(W, H, 128)
    img = frames[20 // 2]  # clip 1: the method's map is hot, the baseline's a tie
    method, base = img[HEADER_H:HEADER_H + ph, :pw], img[HEADER_H:HEADER_H + ph, pw:]
    below_note = slice(HEADER_H, None)  # the note sits on the picture's top HEADER_H rows
    assert _is_cyan(method[below_note]).sum() > 50  # the method's box (the hot cuboid)
    assert not _is_cyan(base[below_note]).any()  # no box for the tie
    assert _is_cyan(base[:HEADER_H, :pw // 2]).sum() > 20  # the note, in the box's colour
    assert not _is_cyan(method[:HEADER_H]).any()  # a localized clip has no note
    calm = frames[4 // 2]  # clip 0 of the method is constant too (grid 4): a tie as well
    assert not _is_cyan(calm[HEADER_H * 2:HEADER_H + ph, :pw]).any()
    assert _is_cyan(calm[HEADER_H:HEADER_H * 2, :pw // 2]).sum() > 20


def test_no_localization_text():
    assert no_localization_text(1) == "no localization (grid 1)"
    assert no_localization_text(7) == "no localization (tie)"
    assert no_localization_text(None) == "no localization (tie)"
