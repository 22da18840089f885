"""The Ray engine's decode task, importable without torch.

A decode worker runs stmil's own decoder and clip rules (:func:`~stmil.features.video.iter_clips`)
and streams native-size uint8 clips, which the extractor actor resizes on its device with the
one resize definition (:mod:`stmil.features.resize`): bitwise the clips a local decode worker
resizes. A worker that never imports torch starts without its 1.3 s import and holds none of its
memory (benchmarks/NOTES.md). Where resized clips are smaller to ship (large frames for CPU
actors: :func:`stmil.features.ray_engine.resize_in_task`), the task resizes, and then imports
torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stmil.errors import StmilError
from stmil.features.pipeline_config import ExtractSettings
from stmil.features.video import failure_reason, iter_clips, probe


def decode_range(path: str, s: ExtractSettings, clips: tuple[int, int | None],
                 resize: bool) -> Iterator[Any]:
    """A decode task (a Ray streaming generator): per clip batch a header ``("batch", first
    clip, n)`` then the clips as numpy, ``(B, T, H, W, 3)`` uint8 (``(B, 3, T, S, S)``
    float32 with ``resize``); then ``("end", VideoInfo, stats)``, or ``("error", reason)``."""
    if resize:
        import torch  # deferred: only a decode task that resizes needs torch

        torch.set_num_threads(1)
    try:
        info = probe(path)
        stats: dict = {}
        for batch in iter_clips(path, s.clip_len, s.stride, s.size, s.fps, s.tail,
                                s.batch_size, info=info, stats=stats, resize=resize,
                                clips=clips):
            yield "batch", batch.starts[0] // s.stride, len(batch.starts)
            yield np.asarray(batch.clips)
        yield "end", info, stats
    except (StmilError, OSError) as e:
        yield "error", failure_reason(e, Path(path))
