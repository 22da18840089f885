"""Reading feature files for a dataset, with the checks that keep a run consistent."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stmil.datasets import VideoRecord, fit_to_video
from stmil.errors import StmilError
from stmil.video import clip_frame_ranges

# Metadata that must agree between every video of one run.
CONSISTENT_KEYS = ("grid", "size", "endpoint", "clip_len", "stride", "channels", "weights_sha256",
                   "precision")


class FeatureError(StmilError, ValueError):
    """Features are missing, inconsistent or not finite; the message names the videos."""


@dataclass
class VideoFeatures:
    """A dataset record with its memory-mapped features ``(n_clips, G*G, C)`` and metadata."""

    record: VideoRecord
    features: np.ndarray
    meta: dict

    @property
    def clip_ranges(self) -> np.ndarray:
        """Source-frame range of each clip, ``(n_clips, 2)`` half-open."""
        return meta_clip_ranges(self.meta)


def meta_clip_ranges(meta: dict) -> np.ndarray:
    """Source-frame range ``(n_clips, 2)`` of each clip of a feature file, from its metadata."""
    src_fps = meta.get("source_fps", meta["fps"])
    fps = meta["fps"] if meta["fps"] != src_fps else None
    return clip_frame_ranges(meta["n_clips"], meta["clip_len"], meta["stride"], src_fps, fps,
                             meta["n_frames"])


def load_features(feature_dir: Path | str, video_id: str) -> tuple[np.ndarray, dict]:
    """Memory-mapped ``(n_clips, G*G, C)`` float16 features and metadata of one video."""
    feature_dir = Path(feature_dir)
    meta = json.loads((feature_dir / f"{video_id}.json").read_text())
    return np.load(feature_dir / f"{video_id}.npy", mmap_mode="r"), meta


def _names(ids: Sequence[str], limit: int = 8) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def load_dataset_features(
    records: Sequence[VideoRecord],
    feature_dir: Path | str,
    skip_missing: bool = False,
    check_finite: bool = True,
    log: Callable[[str], None] = print,
) -> list[VideoFeatures]:
    """Features of every record, refusing missing, mismatched or non-finite ones.

    Raises :class:`FeatureError` naming the videos concerned. With ``skip_missing``, videos
    without features are left out and logged instead.
    """
    feature_dir = Path(feature_dir)
    out: list[VideoFeatures] = []
    missing: list[str] = []
    for rec in records:
        if not (feature_dir / f"{rec.video_id}.json").is_file():
            missing.append(rec.video_id)
            continue
        try:
            arr, meta = load_features(feature_dir, rec.video_id)
        except (OSError, ValueError) as e:
            raise FeatureError(f"{feature_dir / rec.video_id}: unreadable features ({e})") from e
        if arr.ndim != 3 or arr.shape[0] != meta.get("n_clips"):
            raise FeatureError(f"{rec.video_id}: feature array {arr.shape} does not match "
                               f"its metadata ({meta.get('n_clips')} clips)")
        rec = fit_to_video(rec, meta["width"], meta["height"], meta["n_frames"])  # boxes, frames
        out.append(VideoFeatures(rec, arr, meta))
    if missing:
        msg = f"{len(missing)} listed videos have no features in {feature_dir}: {_names(missing)}"
        if not skip_missing:
            raise FeatureError(msg + " (extract them, or pass --skip-missing)")
        log(f"warning: skipping {msg}")
    if not out:
        raise FeatureError(f"no features found in {feature_dir} for the listed videos")
    ref = out[0]
    for key in CONSISTENT_KEYS:
        odd = [v.record.video_id for v in out if v.meta.get(key) != ref.meta.get(key)]
        if odd:
            raise FeatureError(f"features disagree on {key}: {ref.record.video_id} has "
                               f"{ref.meta.get(key)!r} but {_names(odd)} differ")
    if check_finite:
        bad = [v.record.video_id for v in out if not np.isfinite(v.features).all()]
        if bad:
            raise FeatureError(f"NaN or Inf in the features of {_names(bad)}")
    return out
