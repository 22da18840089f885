"""Kinetics-400 classification of a whole video with the full I3D (``Logits`` endpoint)."""

from __future__ import annotations

from pathlib import Path

import torch

from stmil.device import resolve_device
from stmil.errors import ConfigError
from stmil.features.labels import KINETICS400
from stmil.features.pipeline_config import ClassifyOptions, check_count
from stmil.features.video import iter_clips, probe
from stmil.features.weights import load_i3d
from stmil.settings import check


@torch.inference_mode()
def classify_video(
    path: Path | str, top: int = 5, window: int = 128, device: str = "auto"
) -> list[tuple[str, float]]:
    """Top-``top`` Kinetics-400 classes of a video: ``[(name, probability), ...]``.

    Frames are resized to 224x224 and scaled to ``[-1, 1]``. A video of up to ``window``
    frames goes through the network whole, as in DeepMind's evaluation; a longer one is cut
    into windows of ``window`` frames (the tail kept, padded) whose logits are averaged.
    ``top`` must be 1 to 400 (checked before the network runs): :class:`ConfigError` if not.
    """
    check(ClassifyOptions, "top", top)
    if check_count("window", window) < 9:
        raise ConfigError(f"window must be at least 9 frames (the network's shortest input), "
                          f"got {window}")
    dev = resolve_device(device)
    info = probe(path)
    model = load_i3d("Logits").to(dev)
    n = info.frames_reported
    clip_len = n if 9 <= n <= window else window
    logits = []
    for batch in iter_clips(path, clip_len, clip_len, 224, tail="pad", batch_size=1, info=info):
        logits.append(model(batch.clips.to(dev)).float().cpu())
    probs = torch.cat(logits).mean(0).softmax(-1)
    p, idx = probs.topk(top)
    return [(KINETICS400[i], float(q)) for q, i in zip(p.tolist(), idx.tolist())]
