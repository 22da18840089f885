"""Tiny generated videos with a planted visual event, and a run trained to find it.

The scene is a static textured background with mild per-frame noise; the event is a bright
checkerboard moving inside one known box. A run is trained (weak MIL, a few iterations) on
real I3D features of short clips of such scenes at input size :data:`SIZE`, so that it scores
the event's cuboid high and the background low.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

W, H, FPS = 128, 96, 30
SIZE = 64  # the run's input size: I3D on 64 x 64 frames is ~10x cheaper than on 224 x 224
# The event's box (x1, y1, x2, y2): cuboids (row 2..3, col 4..5) of the 7x7 grid of 128x96.
EVENT_BOX = (74.0, 28.0, 108.0, 54.0)


def scene_frames(n: int, events: list[tuple[int, int]], seed: int = 0,
                 box: tuple[float, float, float, float] = EVENT_BOX) -> np.ndarray:
    """``(n, H, W, 3)`` uint8 frames; the event is on during each half-open frame span.

    The background is the same for every seed (one camera); ``seed`` draws the noise."""
    base = np.random.default_rng(0).integers(60, 120, size=(H // 8, W // 8, 3)).astype(np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    x1, y1, x2, y2 = (int(v) for v in box)
    yy, xx = np.mgrid[y1:y2, x1:x2]
    rng = np.random.default_rng(seed)
    out = np.empty((n, H, W, 3), dtype=np.uint8)
    for f in range(n):
        frame = base.astype(np.int16) + rng.integers(-4, 5, size=(H, W, 1))
        if any(s <= f < e for s, e in events):
            check = ((xx + 3 * f) // 4 + (yy + 2 * f) // 4) % 2
            frame[y1:y2, x1:x2] = np.where(check[..., None] == 1, 250, 10)
        out[f] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def write_planted_run(base: Path, extractor, seed: int = 0) -> Path:
    """Train a tiny run that finds the planted event; returns the run folder.

    Real I3D features (input size :data:`SIZE`) of two 48-frame scenes, one with the event on
    clip 1, one without, are copied with small noise into a UCF-Crime2Local layout of 4 + 4
    train videos; weak MIL then learns the event's cuboids. The paper's method (ungated): the
    calibration cases of tests/live/test_events.py are built on its scores.
    """
    from stmil.features.extract import ExtractSettings, extract_video
    from stmil.mil.train import train
    from tests.conftest import write_video
    from tests.planted import _write_vatic

    videos = base / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    settings = ExtractSettings(size=SIZE)
    anom, meta = extract_video(write_video(videos / "a.mkv", scene_frames(48, [(16, 32)], 1)),
                               extractor, settings)
    norm, _ = extract_video(write_video(videos / "n.mkv", scene_frames(48, [], 2)), extractor,
                            settings)
    data, feats = base / "data", base / "feats"
    (data / "readme" / "Txt annotations").mkdir(parents=True)
    feats.mkdir()
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(8):
        vid = f"{'Fighting' if i % 2 == 0 else 'Normal_Videos_'}{i:03d}_x264"
        x = (anom if i % 2 == 0 else norm).astype(np.float32)
        x = np.abs(x + 0.02 * rng.normal(size=x.shape) * x.std()).astype(np.float16)
        np.save(feats / f"{vid}.npy", x)
        (feats / f"{vid}.json").write_text(dataclasses.replace(
            meta, source=f"{vid}.mp4", source_bytes=None, source_mtime_ns=None).to_json())
        ids.append(vid)
        if i % 2 == 0:
            _write_vatic(data / "readme" / "Txt annotations" / f"{vid}.txt",
                         np.array(EVENT_BOX), 16, 32, 48)
    (data / "readme" / "Train_split_AD.txt").write_text("\n".join(ids) + "\n")
    run = base / "run"
    train(data, feats, run, iterations=40, hidden=32, mid=8, n_segments=4, seed=seed,
          device="cpu", progress=False, method="paper")
    return run
