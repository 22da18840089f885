"""Every MP4 stmil writes plays in a browser while it downloads: H.264 yuv420p with the index
first (fast start), checked by reading the file's boxes (tests/mp4.py), not through PyAV's
writer. The proxies of ``stmil serve`` are checked in tests/serve."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from stmil.live.clip import write_clip
from stmil.overlay import render_overlay
from stmil.synth.write import VideoWriter
from tests.conftest import ramp_frames, write_video
from tests.mp4 import assert_browser_mp4, top_level
from tests.test_overlay import _scores

N, H, W = 40, 48, 64


def test_a_plain_mp4_is_not_fast_start(tmp_path):
    """The oracle can fail: FFmpeg's default MP4 puts the index last."""
    path = write_video(tmp_path / "plain.mp4", ramp_frames(N, H, W), codec="libx264")
    order = top_level(path)
    assert order.index("mdat") < order.index("moov")


def test_incident_clips_overlays_and_synthetic_videos(tmp_path):
    frames = ramp_frames(N, H, W)
    clip = tmp_path / "cam.incident-001.mp4"
    assert write_clip(clip, frames, 30.0, "cam frames 0-40") == N
    video = write_video(tmp_path / "v.mkv", frames)
    overlay = render_overlay(video, _scores(), tmp_path / "v.overlay.mp4")
    synth = tmp_path / "synth.mp4"
    with VideoWriter(synth, W, H, Fraction(30)) as w:
        for f in frames:
            w.write(np.ascontiguousarray(f))
    for path in (clip, overlay, synth):
        assert_browser_mp4(path)
