"""Display rotation (issue 22 item 17): a phone video whose container says "rotate -90"
(shown portrait) is decoded upright, its size and boxes are the upright ones, and the feature
metadata says so; a mirroring display matrix is refused in one line."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stmil.features.extract import extract_video
from stmil.features.pipeline_config import ExtractSettings
from stmil.features.video import VideoError, iter_frames, probe

W, H = 64, 32  # coded (landscape) size


def write_rotated(path: Path, degrees: int, hflip: bool = False, n: int = 20) -> Path:
    """An H.264 MP4 of ``n`` black W x H frames with a white block in the coded top-left
    corner (rows 0-7, columns 0-15), and a display matrix turning it ``degrees``
    counter-clockwise (as phones write it)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv444p"
        s.options = {"crf": "0"}
        s.set_display_rotation(degrees, hflip=hflip)
        for _ in range(n):
            a = np.zeros((H, W, 3), np.uint8)
            a[:8, :16] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize("degrees, shape, block", [
    # -90: turned 90 degrees clockwise for display; the coded top-left goes to the top right
    (-90, (W, H), (slice(0, 16), slice(H - 8, H))),
    # 90: counter-clockwise; the coded top-left goes to the bottom left
    (90, (W, H), (slice(W - 16, W), slice(0, 8))),
    # 180: upside down; the coded top-left goes to the bottom right
    (180, (H, W), (slice(H - 8, H), slice(W - 16, W))),
    (0, (H, W), (slice(0, 8), slice(0, 16))),
])
def test_frames_are_decoded_upright(tmp_path, degrees, shape, block):
    path = write_rotated(tmp_path / "phone.mp4", degrees)
    info = probe(path)
    assert (info.height, info.width) == shape and info.rotation == degrees % 360
    frames = list(iter_frames(path, info))
    assert len(frames) == 20
    for f in frames:
        assert f.shape == (*shape, 3)
        white = np.zeros(shape, bool)
        white[block] = True
        luma = f.mean(axis=2)
        assert luma[white].min() > 200 and luma[~white].max() < 55


def test_feature_metadata_records_the_rotation(tmp_path, small_extractor):
    path = write_rotated(tmp_path / "phone.mp4", -90)
    _, meta = extract_video(path, small_extractor, ExtractSettings(size=64))
    assert (meta.width, meta.height, meta.rotation) == (H, W, 270)


def test_a_mirroring_display_matrix_is_refused(tmp_path):
    path = write_rotated(tmp_path / "selfie.mp4", 0, hflip=True)
    with pytest.raises(VideoError, match="selfie.mp4: its display matrix mirrors the picture"):
        probe(path)
