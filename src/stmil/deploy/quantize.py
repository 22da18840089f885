"""``export-model --format openvino --precision int8``: post-training quantisation of the
feature graph with NNCF on clips of the user's own videos (``--calibration VIDEOS``).

The fp32 IR (:func:`~stmil.deploy.export.to_openvino`) is quantised by ``nncf.quantize``
(default preset: symmetric int8 weights and activations, calibrated on at most
:data:`CALIBRATION_CLIPS` clips, cut and resized exactly as ``stmil extract`` does). The error
it costs is measured on those clips against PyTorch fp32 (relative L2 of each clip's cuboid
features: mean and max) and recorded in the manifest (``checked``); an int8 graph is kept
whatever its error (it is the user's choice), but one off by more than :data:`INT8_LIMIT` is
refused as broken. The scorer and the motion-energy branch (:func:`motion_scope`) stay fp32:
the export's check still requires motion energy equal to stmil's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stmil.cuboids import pool_cuboids
from stmil.deploy.runtime import OpenVinoSession, require_openvino
from stmil.errors import ConfigError, ModelError, StmilError
from stmil.features.video import iter_clips

#: Most clips used to calibrate (and to measure the error): every clip of the videos, in order,
#: up to this many.
CALIBRATION_CLIPS = 32
#: An int8 feature graph further than this (mean relative L2) from PyTorch fp32 is refused.
INT8_LIMIT = 0.5
EXTRA = "pip install nncf"


def motion_scope(nncf: Any) -> Any:
    """The motion-energy branch of the feature graph (:func:`stmil.deploy.graphs._motion`'s
    node names), left in fp32: stored motion energy and the motion gate must stay exact."""
    return nncf.IgnoredScope(patterns=[r"(later|earlier|frame_diff|abs_diff|energy|motion_).*"],
                             validate=False)


def require_nncf() -> Any:
    """The ``nncf`` module; :class:`StmilError` naming what to install when it is missing."""
    try:
        import nncf
    except ImportError:
        raise StmilError(f"--precision int8 quantises with NNCF, which is missing: {EXTRA}"
                         ) from None
    return nncf


def calibration_clips(videos: Sequence[Path | str], settings: Any,
                      limit: int = CALIBRATION_CLIPS) -> np.ndarray:
    """Model input ``(N, 3, T, S, S)`` float32 of the first ``limit`` clips of ``videos``, cut
    with ``settings`` (:class:`~stmil.deploy.export.ClipSettings`) as ``stmil extract`` cuts
    them. :class:`~stmil.features.video.VideoError` naming a video that cannot be read;
    :class:`ConfigError` when they hold no clip."""
    s, out, n = settings, [], 0
    for video in videos:
        for batch in iter_clips(video, s.clip_len, s.stride, s.size, s.fps, s.tail):
            out.append(batch.clips.numpy()[:limit - n])
            n += len(out[-1])
            if n >= limit:
                return np.concatenate(out)
    if not out:
        raise ConfigError("--calibration: the videos hold no clip (each is shorter than "
                          f"{s.clip_len} frames); give videos of the cameras to deploy on")
    return np.concatenate(out)


def quantize_features(xml: bytes, bin_: bytes, clips: np.ndarray, model: torch.nn.Module,
                      grid: int, checked: dict) -> tuple[bytes, bytes]:
    """The fp32 feature IR ``xml`` / ``bin_`` quantised to int8 by NNCF on ``clips``
    ``(N, 3, T, S, S)``; ``checked`` gets ``int8_features_rel_l2`` (mean over the clips) and
    ``int8_features_rel_l2_max`` against PyTorch fp32 ``model`` on the same clips."""
    nncf, ov = require_nncf(), require_openvino()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.xml", Path(tmp) / "int8.xml"
        src.write_bytes(xml)
        src.with_suffix(".bin").write_bytes(bin_)
        data = nncf.Dataset([{"clips": c[None]} for c in clips])
        quantized = nncf.quantize(ov.Core().read_model(str(src)), data,
                                  subset_size=len(clips), ignored_scope=motion_scope(nncf))
        ov.save_model(quantized, str(dst), compress_to_fp16=False)
        session = OpenVinoSession(dst, ["features", "motion"])
        errors = []
        with torch.no_grad():
            for c in clips:
                ref = pool_cuboids(model(torch.from_numpy(c[None])), grid).numpy()
                got = session.run(None, {"clips": c[None]})[0]
                errors.append(float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))
        out = dst.read_bytes(), dst.with_suffix(".bin").read_bytes()
    checked["int8_features_rel_l2"] = float(np.mean(errors))
    checked["int8_features_rel_l2_max"] = float(np.max(errors))
    if not checked["int8_features_rel_l2"] <= INT8_LIMIT:
        raise ModelError(f"the int8 feature graph is {checked['int8_features_rel_l2']:.2f} "
                         f"(relative L2) from PyTorch on the calibration clips, over "
                         f"{INT8_LIMIT}; use --precision fp32 or fp16")
    return out
