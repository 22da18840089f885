"""Planted-signal features in UCF-Crime2Local layout, for learning tests.

Each cuboid holds a non-negative "scene" feature shared by all videos (one camera), plus
per-video and per-clip noise; anomalous videos add a fixed "anomaly direction" at one cuboid
position (random per video) over a known span of clips. Boxes mark that cuboid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stmil.cuboids import cuboid_boxes

W, H, GRID, CLIP = 224, 224, 7, 16


def make_planted(root: Path, feats: Path, n_train: int = 40, n_test: int = 20, n_clips: int = 40,
                 channels: int = 64, strength: float = 1.5, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    # The anomaly excites a few channels, as a distinct motion pattern does in I3D features.
    direction = np.zeros(channels, dtype=np.float32)
    direction[rng.choice(channels, size=max(1, channels // 8), replace=False)] = 1.0
    scene = np.abs(rng.normal(size=(1, GRID * GRID, channels)))
    boxes = cuboid_boxes(W, H, GRID)
    (root / "readme" / "Txt annotations").mkdir(parents=True, exist_ok=True)
    feats.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"Train": [], "Test": []}
    for split, count in (("Train", n_train), ("Test", n_test)):
        for i in range(count):
            anomalous = i % 2 == 0
            vid = f"{'Fighting' if anomalous else 'Normal_Videos_'}{split}{i:03d}_x264"
            splits[split].append(vid)
            video = 0.3 * np.abs(rng.normal(size=(1, GRID * GRID, channels)))
            noise = 0.3 * np.abs(rng.normal(size=(n_clips, GRID * GRID, channels)))
            x = (scene + video + noise).astype(np.float32)
            if anomalous:
                pos = int(rng.integers(GRID * GRID))
                s = int(rng.integers(0, n_clips // 2))
                e = s + int(rng.integers(n_clips // 5, n_clips // 2))
                x[s:e, pos] += strength * direction
                rows = []
                for f in range(n_clips * CLIP):
                    lost = int(not (s * CLIP <= f < e * CLIP))
                    b = boxes[pos].round().astype(int)
                    rows.append(f'0 {b[0]} {b[1]} {b[2] - 1} {b[3] - 1} {f} {lost} 0 0 "fight"')
                (root / "readme" / "Txt annotations" / f"{vid}.txt").write_text("\n".join(rows))
            np.save(feats / f"{vid}.npy", x.astype(np.float16))
            meta = {"source": f"{vid}.mp4", "fps": 30.0, "source_fps": 30.0,
                    "n_frames": n_clips * CLIP, "width": W, "height": H, "clip_len": CLIP,
                    "stride": CLIP, "size": 224, "grid": GRID, "endpoint": "Mixed_4e",
                    "tail": "drop", "n_clips": n_clips, "channels": channels,
                    "weights_sha256": "planted"}
            (feats / f"{vid}.json").write_text(json.dumps(meta))
    for split, ids in splits.items():
        (root / "readme" / f"{split}_split_AD.txt").write_text("\n".join(ids) + "\n")
