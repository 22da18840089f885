"""Decoding, resizing, clip cutting, bounded memory and error reporting of
``stmil.features.video``."""

from __future__ import annotations

import tracemalloc
import weakref

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stmil.features.video as video
from stmil.features.video import (
    VideoError,
    iter_clips,
    iter_frames,
    probe,
    to_model_input,
)
from tests.conftest import ramp_frames, write_video


def smooth_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Low-frequency frames (lossy codecs keep them close): a gradient plus 5 * index."""
    grad = np.linspace(20, 120, w)[None, :, None] + np.linspace(0, 30, h)[:, None, None]
    return np.stack([np.broadcast_to(grad + 5 * i, (h, w, 3)) for i in range(n)]).astype(np.uint8)


def model_frames(frames: np.ndarray) -> torch.Tensor:
    """Frames ``(N, H, W, 3)`` uint8 as the model sees them unresized: ``(3, N, H, W)``."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() * (2 / 255) - 1


def all_clips(path, **kw) -> tuple[torch.Tensor, list[int], list[bool]]:
    clips, starts, padded = [], [], []
    for b in iter_clips(path, **kw):
        assert b.clips.shape[0] == len(b.starts) == len(b.padded)
        clips.append(b.clips)
        starts += b.starts
        padded += b.padded
    return (torch.cat(clips) if clips else torch.empty(0)), starts, padded


# --- decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, codec, lossless",
    [
        ("v.mp4", "libx264", False),
        ("v.avi", "mpeg4", False),
        ("v.avi", "ffv1", True),
        ("v.mkv", "ffv1", True),
        ("v.webm", "libvpx-vp9", False),
    ],
)
def test_decode_formats(tmp_path, name, codec, lossless):
    frames = smooth_frames(20)
    path = write_video(tmp_path / name, frames, fps=25, codec=codec)
    info = probe(path)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(25.0)
    assert info.frames_reported in (0, 20)  # mkv/webm do not store a count
    decoded = np.stack(list(iter_frames(path)))
    assert decoded.shape == (20, 48, 64, 3) and decoded.dtype == np.uint8
    if lossless:
        np.testing.assert_array_equal(decoded, frames)
    else:
        err = np.abs(decoded.astype(float) - frames).mean(axis=(1, 2, 3))
        assert err.max() < 6, err  # frames 5 levels apart: each decoded frame is the right one


def test_decode_gif(tmp_path):
    path = write_video(tmp_path / "v.gif", smooth_frames(12, 40, 56), fps=10, codec="gif")
    info = probe(path)
    assert (info.width, info.height, info.fps, info.frames_reported) == (56, 40, 10.0, 12)
    decoded = list(iter_frames(path))
    assert len(decoded) == 12
    assert all(f.shape == (40, 56, 3) and f.dtype == np.uint8 for f in decoded)


def test_probe_odd_size_and_rate(tmp_path):
    path = write_video(tmp_path / "v.avi", ramp_frames(7, h=30, w=50), fps=12, codec="ffv1")
    info = probe(str(path))  # a str path works too
    assert (info.width, info.height, info.fps, info.frames_reported) == (50, 30, 12.0, 7)


# --- to_model_input --------------------------------------------------------------------------


def test_to_model_input_range_shape_dtype():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(3, 37, 53, 3), dtype=np.uint8)
    frames[0] = 0
    frames[1] = 255
    x = to_model_input(frames, size=32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[0], torch.tensor(-1.0)) and torch.allclose(x[1], torch.tensor(1.0))


@pytest.mark.parametrize("c", [0, 1, 77, 128, 254, 255])
def test_to_model_input_constant_color_exact(c):
    frames = np.full((2, 48, 64, 3), c, dtype=np.uint8)
    for size in (32, 48, 100):  # down, no resize on one side, up
        x = to_model_input(frames, size=size)
        torch.testing.assert_close(x, torch.full_like(x, c / 255 * 2 - 1), atol=1e-6, rtol=0)


def test_to_model_input_channels_and_no_resize_is_identity():
    frames = ramp_frames(2, h=32, w=32)
    frames[..., 0], frames[..., 2] = 10, 250
    x = to_model_input(frames, size=32)
    torch.testing.assert_close(x, model_frames(frames).permute(1, 0, 2, 3))
    assert torch.allclose(x[:, 0], torch.tensor(10 / 255 * 2 - 1))  # RGB order kept
    assert torch.allclose(x[:, 2], torch.tensor(250 / 255 * 2 - 1))


def test_to_model_input_antialiases_checkerboard():
    # A 1-pixel checkerboard downscaled 3x. Antialiased bilinear = triangle filter of support
    # 3 px: normalised weights [1, 2, 3, 2, 1] / 9 on each axis, 5/9 on even offsets, 4/9 on
    # odd. An interior output pixel over a dark centre is bright with weight 2 * 5/9 * 4/9 =
    # 40/81; over a bright centre (5/9)^2 + (4/9)^2 = 41/81. Plain bilinear samples exactly one
    # source pixel (centre 3d + 1) and returns pure 0 / 255.
    yy, xx = np.mgrid[0:48, 0:48]
    board = (((xx + yy) % 2) * 255).astype(np.uint8)
    frames = np.repeat(board[None, :, :, None], 3, axis=3)
    got = (to_model_input(frames, size=16)[0, 0].numpy() + 1) * 255 / 2
    r, c = np.mgrid[0:16, 0:16]
    expected = np.where((r + c) % 2 == 0, 255 * 40 / 81, 255 * 41 / 81)
    np.testing.assert_allclose(got[1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-3)
    aliased = F.interpolate(torch.from_numpy(board)[None, None].float(), size=(16, 16),
                            mode="bilinear", align_corners=False)[0, 0].numpy()
    assert set(np.unique(aliased)) <= {0.0, 255.0}  # what no antialiasing would give


# --- iter_clips ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ramp50(tmp_path_factory):
    """50 lossless 32x32 frames at 30 fps; with size=32 clips are the frames, unresized."""
    frames = ramp_frames(50, h=32, w=32)
    path = write_video(tmp_path_factory.mktemp("ramp") / "ramp50.mkv", frames, fps=30)
    return path, frames


def test_iter_clips_drop_counts_and_contents(ramp50):
    path, frames = ramp50
    stats: dict = {}
    clips, starts, padded = all_clips(path, clip_len=16, stride=16, size=32, batch_size=2,
                                      stats=stats)
    assert clips.shape == (3, 3, 16, 32, 32)
    assert starts == [0, 16, 32] and padded == [False] * 3
    ref = model_frames(frames)
    for k, s in enumerate(starts):
        torch.testing.assert_close(clips[k], ref[:, s:s + 16], rtol=0, atol=1e-6)
    assert stats == {"n_frames": 50, "n_sampled": 50}


def test_iter_clips_pad_repeats_last_frame(ramp50):
    path, frames = ramp50
    clips, starts, padded = all_clips(path, clip_len=16, stride=16, size=32, tail="pad")
    assert starts == [0, 16, 32, 48] and padded == [False, False, False, True]
    ref = model_frames(frames)
    last = clips[3]
    torch.testing.assert_close(last[:, :2], ref[:, 48:50], rtol=0, atol=1e-6)
    for t in range(2, 16):
        torch.testing.assert_close(last[:, t], ref[:, 49], rtol=0, atol=1e-6)


def test_iter_clips_overlapping_stride(ramp50):
    path, frames = ramp50
    clips, starts, _ = all_clips(path, clip_len=16, stride=8, size=32, batch_size=3)
    assert starts == [0, 8, 16, 24, 32]  # 32 + 16 = 48 <= 50; 40 + 16 > 50
    ref = model_frames(frames)
    for k, s in enumerate(starts):
        torch.testing.assert_close(clips[k], ref[:, s:s + 16], rtol=0, atol=1e-6)
    _, starts, padded = all_clips(path, clip_len=16, stride=8, size=32, tail="pad")
    assert starts == [0, 8, 16, 24, 32, 40] and padded[-1] and not any(padded[:-1])


def test_iter_clips_resampled_to_half_rate(tmp_path):
    frames = ramp_frames(64, h=32, w=32)
    path = write_video(tmp_path / "v.mkv", frames, fps=30)
    native, _, _ = all_clips(path, clip_len=16, stride=16, size=32)
    stats: dict = {}
    half, starts, _ = all_clips(path, clip_len=16, stride=16, size=32, fps=15, stats=stats)
    assert native.shape[0] == 4 and half.shape[0] == 2 and starts == [0, 16]
    assert stats == {"n_frames": 64, "n_sampled": 32}
    ref = model_frames(frames)
    torch.testing.assert_close(half[0], ref[:, 0:32:2], rtol=0, atol=1e-6)
    torch.testing.assert_close(half[1], ref[:, 32:64:2], rtol=0, atol=1e-6)


def test_iter_clips_upsampled_repeats_frames(tmp_path):
    frames = ramp_frames(20, h=32, w=32)
    path = write_video(tmp_path / "v.mkv", frames, fps=30)
    clips, starts, _ = all_clips(path, clip_len=16, stride=16, size=32, fps=60)
    assert starts == [0, 16]  # 40 sampled frames
    ref = model_frames(frames)
    torch.testing.assert_close(clips[1], ref[:, np.arange(16, 32) // 2], rtol=0, atol=1e-6)


def test_iter_clips_resizes_to_size(ramp50):
    path, _ = ramp50
    clips, _, _ = all_clips(path, clip_len=8, stride=8, size=20)
    assert clips.shape == (6, 3, 8, 20, 20)


def test_iter_clips_too_short_gives_nothing_unless_padded(tmp_path):
    path = write_video(tmp_path / "short.mkv", ramp_frames(10, h=32, w=32), fps=30)
    assert list(iter_clips(path, clip_len=16, size=32)) == []
    _, starts, padded = all_clips(path, clip_len=16, size=32, tail="pad")
    assert starts == [0] and padded == [True]


def test_iter_clips_rejects_bad_arguments(ramp50):
    path, _ = ramp50
    with pytest.raises(ValueError, match="tail"):
        next(iter_clips(path, tail="wrap"))
    with pytest.raises(ValueError, match="stride must be a whole number >= 1, got 0"):
        next(iter_clips(path, stride=0))


# --- bounded memory --------------------------------------------------------------------------

LONG_FRAMES, LONG_H, LONG_W = 2000, 48, 64


@pytest.fixture(scope="session")
def long_video(tmp_path_factory):
    """2,000 frames of 64x48 (18 MB decoded), libx264, written frame by frame."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, size=(LONG_H, LONG_W, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = LONG_W, LONG_H, "yuv420p"
        for i in range(LONG_FRAMES):
            frame = np.roll(base, i, axis=1)
            for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def test_iter_clips_memory_is_bounded(long_video, monkeypatch):
    # Every decoded frame (numpy) and every resized frame (torch) is tracked by a weak
    # reference; at each yielded batch we count how many are still alive anywhere. Holding the
    # video would keep up to 2,000 alive. numpy's buffers are also visible to tracemalloc.
    decoded: list[weakref.ref] = []
    resized: list[weakref.ref] = []
    real_iter_frames, real_to_model_input = video.iter_frames, video.to_model_input

    def tracked_frames(*a, **k):
        for f in real_iter_frames(*a, **k):
            decoded.append(weakref.ref(f))
            yield f

    def tracked_resize(*a, **k):
        x = real_to_model_input(*a, **k)
        resized.append(weakref.ref(x))
        return x

    monkeypatch.setattr(video, "iter_frames", tracked_frames)
    monkeypatch.setattr(video, "to_model_input", tracked_resize)

    def alive(refs):
        return sum(r() is not None for r in refs)

    clip_len, batch_size = 16, 4
    max_decoded = max_resized = n_clips = 0
    stats: dict = {}
    tracemalloc.start()
    try:
        for batch in iter_clips(long_video, clip_len=clip_len, stride=16, size=64,
                                batch_size=batch_size, stats=stats):
            n_clips += len(batch.starts)
            max_decoded = max(max_decoded, alive(decoded))
            max_resized = max(max_resized, alive(resized))
            del batch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats["n_frames"] == LONG_FRAMES and n_clips == LONG_FRAMES // 16
    assert len(decoded) == len(resized) == LONG_FRAMES  # the tracking saw every frame
    assert max_decoded <= 2
    assert max_resized <= clip_len + 1
    decoded_bytes = LONG_FRAMES * LONG_H * LONG_W * 3
    assert peak < 3e6 < decoded_bytes / 6, peak


# --- errors ----------------------------------------------------------------------------------


def expect_video_error(path, match: str) -> VideoError:
    with pytest.raises(VideoError, match=match) as info:
        for _ in iter_clips(path, size=32):
            pass
    err = info.value
    assert str(path) in str(err) and err.path == str(path)
    assert "\n" not in str(err)
    return err


def test_error_missing_file(tmp_path):
    expect_video_error(tmp_path / "nope.mp4", "no such file")
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "nope.mp4")


def test_error_folder(tmp_path):
    (tmp_path / "dir.mp4").mkdir()
    expect_video_error(tmp_path / "dir.mp4", "folder")


def test_error_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    expect_video_error(path, "not a readable video")


def test_error_empty_file(tmp_path):
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    expect_video_error(path, "not a readable video")


def _cut_in_half(path):
    data = path.read_bytes()
    cut = path.with_name("cut_" + path.name)
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize(
    "name, codec",
    [("v.mp4", "libx264"), ("v.avi", "ffv1"), ("v.avi", "mpeg4"), ("v.mkv", "ffv1"),
     ("v.webm", "libvpx-vp9")],
)
def test_error_truncated(tmp_path, name, codec):
    # mp4: the index (moov) is at the end; avi/ffv1: fewer frames than the header says;
    # mkv/webm: no frame count, but the stream's DURATION tag says 2 s.
    path = write_video(tmp_path / name, ramp_frames(60), fps=30, codec=codec)
    assert sum(1 for _ in iter_frames(path)) == 60  # the whole file is fine
    expect_video_error(_cut_in_half(path), "not a readable video|truncated|corrupt")


def test_error_audio_only(tmp_path):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=8000)
        s.layout = "mono"
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in s.encode(frame):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    expect_video_error(path, "no video stream")
