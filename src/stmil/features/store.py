"""Reading feature files for a dataset, with the checks that keep a run consistent."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stmil.datasets import VideoRecord, fit_to_video
from stmil.errors import StmilError
from stmil.features.pipeline_config import TAIL_POLICIES
from stmil.timeline import clip_frame_ranges

log = logging.getLogger(__name__)

# Metadata that must agree between every video of one run.
CONSISTENT_KEYS = ("grid", "size", "endpoint", "clip_len", "stride", "channels", "weights_sha256",
                   "precision")


class FeatureError(StmilError, ValueError):
    """Features are missing, inconsistent or not finite; the message names the videos."""


@dataclass
class VideoFeatures:
    """A dataset record with its memory-mapped features ``(n_clips, G*G, C)``, metadata and
    ``motion``: the motion energy of each cuboid of each clip ``(n_clips, G*G)``
    (:mod:`stmil.features.motion`), None for features without it (an older stmil, imported
    ones). :func:`load_dataset_features` moves it out of ``meta`` into that array (held once,
    in 8 bytes a value rather than a list of Python floats)."""

    record: VideoRecord
    features: np.ndarray
    meta: dict
    motion: np.ndarray | None = None

    @property
    def clip_ranges(self) -> np.ndarray:
        """Source-frame range of each clip, ``(n_clips, 2)`` half-open."""
        return meta_clip_ranges(self.meta)


def meta_motion(meta: dict) -> np.ndarray | None:
    """The ``(n_clips, G*G)`` motion energy a feature file's metadata holds, or None."""
    m = meta.get("motion")
    return None if m is None else np.asarray(m, dtype=np.float64)


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _natural(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _rate(v: object) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v > 0)


def _text(v: object) -> bool:
    return isinstance(v, str) and v != ""


def _sha256(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


# Every key a feature ``.json`` must hold, with its check and what the check means.
REQUIRED_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "fps": (_rate, "a positive number"),
    "n_frames": (_count, "a whole number >= 1"),
    "width": (_count, "a whole number >= 1"),
    "height": (_count, "a whole number >= 1"),
    "clip_len": (_count, "a whole number >= 1"),
    "stride": (_count, "a whole number >= 1"),
    "size": (_count, "a whole number >= 1"),
    "grid": (_count, "a whole number >= 1"),
    "endpoint": (_text, "an I3D endpoint name"),
    "tail": (lambda v: v in TAIL_POLICIES, f"one of {', '.join(TAIL_POLICIES)}"),
    "n_clips": (_count, "a whole number >= 1"),
    "channels": (_count, "a whole number >= 1"),
}
# Keys that may be absent (older or hand-made files), checked when present.
OPTIONAL_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "source": (_text, "a path"),
    "source_fps": (_rate, "a positive number"),
    "precision": (lambda v: v in ("fp32", "bf16"), "fp32 or bf16"),
    "weights_sha256": (_text, "a string"),
    "npy_bytes": (_natural, "a whole number >= 0"),
    "npy_sha256": (_sha256, "64 lowercase hex digits"),
    "source_bytes": (_natural, "a whole number >= 0"),
    "source_mtime_ns": (_natural, "a whole number >= 0"),
}


def read_feature_meta(path: Path | str,
                      fix: str = "re-extract it with stmil extract --overwrite") -> dict:
    """The validated metadata of one feature file ``<id>.json``: the one reader of that format.

    Raises :class:`FeatureError` naming ``path`` (and ending in ``fix``) when it is not UTF-8
    JSON, or is JSON of the wrong shape (not an object, a key missing, a value of the wrong
    type or range). ``OSError`` (a missing or unreadable file) passes through; it names the
    file itself.
    """
    path = Path(path)
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FeatureError(f"{path}: not a feature metadata file: not valid JSON ({e}); "
                           f"{fix}") from e
    if not isinstance(meta, dict):
        raise FeatureError(f"{path}: not a feature metadata file: a JSON object is expected, "
                           f"got {type(meta).__name__}; {fix}")
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise FeatureError(f"{path}: not a feature metadata file: missing "
                           f"{', '.join(missing)}; {fix}")
    for fields in (REQUIRED_FIELDS, OPTIONAL_FIELDS):
        for key, (ok, what) in fields.items():
            if key in meta and not ok(meta[key]):
                raise FeatureError(f"{path}: {key} must be {what}, got {meta[key]!r}; {fix}")
    if "motion" in meta and not _motion_ok(meta["motion"], meta["n_clips"], meta["grid"]):
        raise FeatureError(f"{path}: motion must be n_clips ({meta['n_clips']}) lists of "
                           f"grid x grid ({meta['grid'] ** 2}) finite numbers >= 0; {fix}")
    return meta


def _motion_ok(m: object, n_clips: int, grid: int) -> bool:
    if not (isinstance(m, list) and len(m) == n_clips and all(
            isinstance(row, list) and len(row) == grid * grid for row in m)):
        return False
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
               and x >= 0 for row in m for x in row)


def file_digest(path: Path | str) -> tuple[int, str]:
    """``(byte size, sha256 hex)`` of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def array_mismatch(npy: Path | str, meta: dict) -> str:
    """Why ``npy`` is not the array ``meta`` describes (``''`` when it is).

    Checks the byte size and sha256 recorded at extraction (when recorded), then the shape
    ``(n_clips, grid * grid, channels)``. ``OSError`` when the file cannot be read.
    """
    npy = Path(npy)
    if "npy_bytes" in meta and npy.stat().st_size != meta["npy_bytes"]:
        return f"{npy.stat().st_size} bytes, its metadata records {meta['npy_bytes']}"
    if "npy_sha256" in meta and file_digest(npy)[1] != meta["npy_sha256"]:
        return "its sha256 differs from the one its metadata records"
    try:
        arr = np.load(npy, mmap_mode="r")
    except ValueError as e:
        return f"not a NumPy array file ({e})"
    want = (meta["n_clips"], meta["grid"] ** 2, meta["channels"])
    if arr.shape != want:
        return f"shape {arr.shape}, its metadata says {want}"
    if arr.dtype != np.float16:  # the one dtype rule: extract and import both write float16
        return f"dtype {arr.dtype}; stmil feature files are float16"
    return ""


def meta_clip_ranges(meta: dict) -> np.ndarray:
    """Source-frame range ``(n_clips, 2)`` of each clip of a feature file, from its metadata."""
    src_fps = meta.get("source_fps", meta["fps"])
    fps = meta["fps"] if meta["fps"] != src_fps else None
    return clip_frame_ranges(meta["n_clips"], meta["clip_len"], meta["stride"], src_fps, fps,
                             meta["n_frames"])


def load_features(feature_dir: Path | str, video_id: str) -> tuple[np.ndarray, dict]:
    """Memory-mapped ``(n_clips, G*G, C)`` float16 features and metadata of one video.

    Raises :class:`FeatureError` naming the file when the metadata is malformed, the array is
    missing, or the array is not the one the metadata describes (size, sha256 or shape).
    """
    feature_dir = Path(feature_dir)
    meta = read_feature_meta(feature_dir / f"{video_id}.json")
    npy = feature_dir / f"{video_id}.npy"
    if not npy.is_file():
        raise FeatureError(f"{npy}: missing, but {video_id}.json is there; "
                           "re-extract it with stmil extract")
    why = array_mismatch(npy, meta)
    if why:
        raise FeatureError(f"{npy}: does not match {video_id}.json ({why}); "
                           "re-extract it with stmil extract --overwrite")
    return np.load(npy, mmap_mode="r"), meta


def _names(ids: Sequence[str], limit: int = 8) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def load_dataset_features(
    records: Sequence[VideoRecord],
    feature_dir: Path | str,
    skip_missing: bool = False,
    check_finite: bool = True,
    missing_fix: str = "extract them, or pass --skip-missing",
) -> list[VideoFeatures]:
    """Features of every record, refusing missing, mismatched or non-finite ones.

    Raises :class:`FeatureError` naming the videos concerned. With ``skip_missing``, videos
    without features are left out with a warning; without it, the error for them ends in
    ``missing_fix`` (a command without ``--skip-missing`` says what its user can do).
    """
    feature_dir = Path(feature_dir)
    if not feature_dir.exists():
        raise FeatureError(f"{feature_dir}: no such features folder (extract features there "
                           "with stmil extract, or pass the right --features)")
    if not feature_dir.is_dir():
        raise FeatureError(f"{feature_dir}: not a folder; --features takes the folder of "
                           "extracted <id>.npy and <id>.json files")
    out: list[VideoFeatures] = []
    missing: list[str] = []
    for rec in records:
        if not (feature_dir / f"{rec.video_id}.json").is_file():
            missing.append(rec.video_id)
            continue
        arr, meta = load_features(feature_dir, rec.video_id)
        rec = fit_to_video(rec, meta["width"], meta["height"], meta["n_frames"])  # boxes, frames
        motion = meta_motion(meta)
        meta.pop("motion", None)
        out.append(VideoFeatures(rec, arr, meta, motion))
    if missing:
        msg = f"{len(missing)} listed videos without features in {feature_dir}: {_names(missing)}"
        if not skip_missing:
            raise FeatureError(f"{msg} ({missing_fix})")
        log.warning("skipping %s", msg)
    if not out:
        raise FeatureError(f"no features found in {feature_dir} for the listed videos")
    ref = out[0]
    for key in CONSISTENT_KEYS:
        odd = [v.record.video_id for v in out if v.meta.get(key) != ref.meta.get(key)]
        if odd:
            raise FeatureError(f"{feature_dir}: features disagree on {key}: "
                               f"{ref.record.video_id} has {ref.meta.get(key)!r} but "
                               f"{_names(odd)} differ; extract them all with the same "
                               "settings (stmil extract --overwrite)")
    if check_finite:
        bad = [v.record.video_id for v in out if not np.isfinite(v.features).all()]
        if bad:
            files = _names([str(feature_dir / f"{b}.npy") for b in bad])
            raise FeatureError(f"NaN or Inf in {files}; extract them again with stmil extract "
                               "--overwrite")
    return out
