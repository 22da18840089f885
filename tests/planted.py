"""Planted-signal features in UCF-Crime2Local layout, for learning tests.

One camera: every cuboid holds a non-negative scene feature, a base shared by the whole frame
plus a smaller per-cuboid part (backgrounds look alike across the grid but not identically),
and every video adds small non-negative per-video and per-clip noise. Anomalous videos add a
sparse "anomaly direction" (``strength`` on ``active`` of the channels, like a distinct motion
pattern exciting a few I3D channels) at one cuboid position, random per video, over a known
span of clips; their VATIC boxes mark exactly that cuboid over that span. Normal videos never
carry the direction, and every value is >= 0, like ReLU features.

Learnability depends on the anomaly standing out from the scene's variation between cuboids
(after L2 normalisation), not on its absolute size. Measured on 2 CPU cores, weak cuboid MIL
with the library's default method settings localizes perfectly within 15 iterations here; with
``scene_var=1, video_noise=clip_noise=0.3, strength=1.5`` (the planted cuboid barely differs
from the spread of the other cuboids) it does not learn in 20 iterations (cuboid AUC ~0.5).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stmil.cuboids import cuboid_boxes
from stmil.datasets.crime2local import write_vatic

W, H, GRID, CLIP = 224, 224, 7, 16
#: A brief training of a planted dataset: enough to have a run folder to score and evaluate.
FAST_TRAIN = dict(iterations=6, hidden=16, mid=4, n_segments=4, device="cpu", progress=False)


def make_planted(root: Path, feats: Path, n_train: int = 16, n_test: int = 20, n_clips: int = 32,
                 channels: int = 64, strength: float = 2.0, active: int = 8,
                 scene_var: float = 0.3, video_noise: float = 0.1, clip_noise: float = 0.1,
                 seed: int = 0) -> dict[str, tuple[int, int, int]]:
    """Write the dataset at ``root`` and features in ``feats``; even-indexed videos are anomalous.

    Returns the planted truth of each anomalous video: ``{video_id: (cuboid, start, end)}``
    with a half-open clip span ``[start, end)``.
    """
    rng = np.random.default_rng(seed)
    n = GRID * GRID
    direction = np.zeros(channels, dtype=np.float32)
    direction[rng.choice(channels, size=active, replace=False)] = strength
    scene = (np.abs(rng.normal(size=(1, 1, channels)))
             + scene_var * np.abs(rng.normal(size=(1, n, channels))))
    boxes = cuboid_boxes(W, H, GRID)
    (root / "readme" / "Txt annotations").mkdir(parents=True, exist_ok=True)
    feats.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"Train": [], "Test": []}
    truth: dict[str, tuple[int, int, int]] = {}
    for split, count in (("Train", n_train), ("Test", n_test)):
        for i in range(count):
            anomalous = i % 2 == 0
            vid = f"{'Fighting' if anomalous else 'Normal_Videos_'}{split}{i:03d}_x264"
            splits[split].append(vid)
            video = video_noise * np.abs(rng.normal(size=(1, n, channels)))
            noise = clip_noise * np.abs(rng.normal(size=(n_clips, n, channels)))
            x = (scene + video + noise).astype(np.float32)
            if anomalous:
                pos = int(rng.integers(n))
                s = int(rng.integers(0, n_clips // 2))
                e = s + int(rng.integers(max(1, n_clips // 5), max(2, n_clips // 2)))
                x[s:e, pos] += direction
                truth[vid] = (pos, s, e)
                _write_vatic(root / "readme" / "Txt annotations" / f"{vid}.txt", boxes[pos],
                             s * CLIP, e * CLIP, n_clips * CLIP)
            np.save(feats / f"{vid}.npy", x.astype(np.float16))
            meta = {"source": f"{vid}.mp4", "fps": 30.0, "source_fps": 30.0,
                    "n_frames": n_clips * CLIP, "width": W, "height": H, "clip_len": CLIP,
                    "stride": CLIP, "size": 224, "grid": GRID, "endpoint": "Mixed_4e",
                    "tail": "drop", "n_clips": n_clips, "channels": channels,
                    "weights_sha256": "planted",
                    # uniform motion energy: the motion gate is 1 everywhere (q = 1)
                    "motion": [[1.0] * n] * n_clips}
            (feats / f"{vid}.json").write_text(json.dumps(meta))
    for split, ids in splits.items():
        (root / "readme" / f"{split}_split_AD.txt").write_text("\n".join(ids) + "\n")
    return truth


def planted_run(base: Path, n_train: int, n_test: int, n_clips: int) -> tuple[Path, Path, Path]:
    """A planted dataset ``base/data``, its 16-channel features ``base/feats`` and a run
    ``base/run`` briefly trained on them (:data:`FAST_TRAIN`)."""
    from stmil.mil.train import train

    data, feats, run = base / "data", base / "feats", base / "run"
    make_planted(data, feats, n_train=n_train, n_test=n_test, n_clips=n_clips, channels=16)
    train(data, feats, run, **FAST_TRAIN)
    return data, feats, run


def _write_vatic(path: Path, box: np.ndarray, start: int, end: int, n_frames: int) -> None:
    """One track on every frame, visible on ``[start, end)``; VATIC's xmax/ymax are inclusive,
    so the box covers the cuboid and touches none of its neighbours."""
    x1, y1, x2, y2 = box.round().astype(int).tolist()
    write_vatic(path, [(x1, y1, x2 - 1, y2 - 1)] * (end - start), start, end, n_frames, "fight")
