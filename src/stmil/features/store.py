"""The feature file of one video, both ways: :class:`FeatureMeta` (its ``<id>.json``), the one
reader (:func:`load_features`, :func:`load_dataset_features`), the one writer
(:func:`write_features`) and the checks of a finished or foreign output (:func:`is_done`,
:func:`check_ours`).

A video ``<id>`` is ``<id>.npy`` (float16, ``(n_clips, G*G, C)``) and ``<id>.json``
(:class:`FeatureMeta`: the clips' geometry, the network's settings, the array's byte size and
sha256, the source video's resolved path, size and modification time). The pair is committed as
one unit through the folder's ledger (:mod:`stmil.ownership`): both files are written to
temporary files first and then renamed, the JSON first; a kill between the two renames leaves a
JSON whose recorded sha256 does not match the array beside it, which :func:`is_done` and every
reader detect.

**Versions.** A JSON carries ``schema_version`` (:data:`SCHEMA_VERSION`); one without it was
written by an earlier stmil (version 0) and is read through :func:`migrate`, the one place that
knows how older files differ.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stmil import safejson
from stmil.datasets import VideoRecord, fit_to_video
from stmil.errors import OutputError, StmilError
from stmil.features.pipeline_config import BACKENDS, TAIL_POLICIES
from stmil.ownership import check_can_write, commit
from stmil.settings import MISSING, SettingError, Settings, number_array, setting
from stmil.timeline import clip_frame_ranges

log = logging.getLogger(__name__)

#: The version :func:`write_features` writes; files without ``schema_version`` are version 0.
SCHEMA_VERSION = 1
# Metadata that must agree between every video of one run (one features folder). Among them,
# what computed the features: ``precision`` (fp32, bf16, an export's fp16) and ``backend`` (absent
# for PyTorch; ``onnxruntime``): features of two precisions or two backends are never bitwise
# equal (ONNX Runtime fp32 is PyTorch fp32 to ~1e-6 relative), so they never mix in one folder.
# ``extract`` refuses to add to a folder made otherwise (``settings_mismatch``), training and
# evaluation refuse a folder that mixes them (:func:`load_dataset_features`).
CONSISTENT_KEYS = ("grid", "size", "endpoint", "clip_len", "stride", "channels", "weights_sha256",
                   "precision", "backend")
#: ``backend`` values a feature file may record: the runtimes of exported models (PyTorch's
#: features record none).
EXPORTED_BACKENDS = tuple(b for b in BACKENDS if b != "torch")
REEXTRACT = "re-extract it with stmil extract --overwrite"
NOT_OURS = "move it away, or use another output folder (stmil replaces only its own features)"


class FeatureError(StmilError, ValueError):
    """Features are missing, inconsistent or not finite; the message names the videos."""


_INF = math.inf
_TEXT = r".+"  # a non-empty string


def _count(default: Any = MISSING) -> Any:
    return setting(default, lo=1, hi=_INF)


def _natural() -> Any:
    return setting(None, lo=0, hi=_INF)


def _rate() -> Any:
    return setting(lo=0, lo_open=True, hi=_INF)


def _text(what: str = "a non-empty string") -> Any:
    return setting(None, pattern=_TEXT, what=what)


@dataclass(frozen=True, kw_only=True)
class FeatureMeta(Settings):
    """The metadata of one video's features (``<id>.json``), validated when made.

    Clip geometry: ``n_clips`` clips of ``clip_len`` frames, one every ``stride`` frames of the
    video sampled at ``fps`` (``source_fps``, the video's own rate, unless resampled), over
    ``n_frames`` source frames of ``width`` x ``height`` pixels (upright: ``rotation``, the
    display rotation applied to the decoded frames, None in older files), each resized to
    ``size``;
    ``tail``: what became of a last partial clip. Features: ``channels`` numbers for each of
    ``grid`` x ``grid`` cuboids, from ``endpoint`` (``import:<format>`` for imported ones) at
    ``precision``, computed by ``backend`` (None: PyTorch, or imported; ``onnxruntime``: an
    exported feature graph, ``stmil extract --backend``). ``motion``: the motion energy
    ``(n_clips, G*G)`` float64 of each cuboid
    (read-only), None for imported features or older files. ``npy_bytes`` / ``npy_sha256``:
    the array file's bytes, set by :func:`write_features`. Fields that may be None are those a
    file may lack (imported features, files of older stmil versions).
    """

    schema_version: int = setting(SCHEMA_VERSION, choices=(SCHEMA_VERSION,),
                                  what=f"{SCHEMA_VERSION}")
    source: str | None = _text("a path")
    source_bytes: int | None = _natural()
    source_mtime_ns: int | None = _natural()
    fps: float = _rate()
    source_fps: float = _rate()
    n_frames: int = _count()
    width: int = _count()
    height: int = _count()
    rotation: int | None = setting(None, choices=(0, 90, 180, 270),
                                   what="0, 90, 180 or 270 (degrees)")
    clip_len: int = _count()
    stride: int = _count()
    size: int = _count()
    grid: int = _count()
    endpoint: str = setting(pattern=_TEXT, what="an I3D endpoint name")
    precision: str | None = setting(
        None, choices=("fp32", "bf16", "fp16", "int8"),
        what="fp32, bf16, fp16 or int8 (fp16, int8: an exported model's)")
    backend: str | None = setting(None, choices=EXPORTED_BACKENDS,
                                  what=f"{' or '.join(EXPORTED_BACKENDS)} (absent: PyTorch)")
    tail: str = setting(choices=TAIL_POLICIES)
    n_clips: int = _count()
    channels: int = _count()
    dtype: str | None = setting("float16", choices=("float16",), what="float16")
    resize: str | None = _text()
    weights: str | None = _text()
    weights_sha256: str | None = setting(None)
    import_format: str | None = _text()
    import_files: tuple[str, ...] | None = setting(None, pattern=_TEXT,
                                                   what="a list of one or more paths")
    import_crops: str | None = _text()
    stmil_version: str | None = _text()
    motion_rule: str | None = _text()
    # checked with n_clips and grid (number_array): a record beside the settings
    motion: np.ndarray | None = field(default=None, compare=False, repr=False)
    npy_bytes: int | None = _natural()
    npy_sha256: str | None = setting(None, pattern="[0-9a-f]{64}",
                                     what="64 lowercase hex digits")

    def __post_init__(self) -> None:
        try:  # every field, by its declaration above (stmil.settings)
            super().__post_init__()
        except SettingError as e:
            raise FeatureError(str(e)) from None
        if self.import_files is not None:
            object.__setattr__(self, "import_files", tuple(self.import_files))
        if self.motion is not None:
            try:  # a copy: the caller's array stays the caller's
                motion = number_array("motion", self.motion, (self.n_clips, self.grid ** 2),
                                      lo=0, what=f"n_clips ({self.n_clips}) lists of grid x "
                                                 f"grid ({self.grid ** 2}) finite numbers >= 0")
            except SettingError as e:
                raise FeatureError(str(e)) from None
            motion.flags.writeable = False
            object.__setattr__(self, "motion", motion)
        # cross-field: every clip must start inside the video (timeline.clip_frame_ranges)
        ratio = self.source_fps / self.fps
        last_start = (self.n_clips - 1) * self.stride * ratio
        if not (math.isfinite(last_start) and math.floor(last_start + 1e-9) < self.n_frames):
            raise FeatureError(
                f"its {self.n_clips} clips do not fit the video: with stride {self.stride} at "
                f"fps {self.fps:g} the last clip starts at source frame {last_start:.6g} "
                f"(source_fps {self.source_fps:g}), past its n_frames ({self.n_frames})")

    @property
    def resample_fps(self) -> float | None:
        """The rate the video was resampled to before cutting clips; None: its own rate."""
        return self.fps if self.fps != self.source_fps else None

    @property
    def identity(self) -> dict:
        """What it records of its video (None where it records nothing):
        ``{"source", "source_bytes", "source_mtime_ns"}``, as :func:`source_identity` gives."""
        return {"source": self.source, "source_bytes": self.source_bytes,
                "source_mtime_ns": self.source_mtime_ns}

    def to_json(self) -> str:
        """The ``<id>.json`` text: every field that is not None, ``schema_version`` first."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (np.ndarray, tuple)):
                value = value.tolist() if isinstance(value, np.ndarray) else list(value)
            if value is not None:
                out[f.name] = value
        return json.dumps(out, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: Path | str, fix: str = REEXTRACT
                  ) -> FeatureMeta:
        """The metadata in ``text`` (a ``<id>.json``, of any version: older ones through
        :func:`migrate`). :class:`FeatureError`, one line naming ``where`` and the key and ending
        in ``fix``, when it is not feature metadata of a version this stmil reads."""
        try:
            raw = safejson.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
        except (UnicodeDecodeError, ValueError) as e:
            raise FeatureError(f"{where}: not a feature metadata file: not valid JSON ({e}); "
                               f"{fix}") from None
        if not isinstance(raw, dict):
            raise FeatureError(f"{where}: not a feature metadata file: a JSON object is "
                               f"expected, got {type(raw).__name__}; {fix}")
        version = raw.get("schema_version", 0)
        if not (type(version) is int and version in _REQUIRED):  # JSON's int, not a bool
            raise FeatureError(f"{where}: schema_version must be {SCHEMA_VERSION} or absent "
                               f"(an older stmil), got {_shown(version)}; a newer stmil wrote "
                               f"it? Upgrade stmil, or {fix}")
        missing = [k for k in _REQUIRED[version] if k not in raw]
        if missing:
            raise FeatureError(f"{where}: not a feature metadata file: missing "
                               f"{', '.join(missing)}; {fix}")
        if version != SCHEMA_VERSION:
            raw = migrate(raw)
        unknown = [k for k in raw if k not in _FIELD_NAMES]
        if unknown:
            raise FeatureError(f"{where}: unknown key {unknown[0]!r} in a schema_version "
                               f"{SCHEMA_VERSION} feature file; {fix}")
        try:
            return cls(**raw)
        except FeatureError as e:
            raise FeatureError(f"{where}: {e}; {fix}") from None


def migrate(raw: dict) -> dict:
    """A version-0 feature JSON (written before ``schema_version``: stmil up to e104ed9, or by
    hand) as the current version's keys: the one place that knows how older files differ.

    - ``source_fps`` absent (the earliest files): the clips were cut at the video's own rate,
      so it is ``fps``;
    - keys this version does not know are dropped (older or hand-made files carried notes);
    - everything else keeps its name and meaning: the fields that such a file may lack
      (sizes and sums of the array, the source's identity, precision, motion) are None.
    """
    out = {k: v for k, v in raw.items() if k in _FIELD_NAMES and k != "schema_version"}
    out.setdefault("source_fps", out["fps"])
    return out


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(FeatureMeta))
_CURRENT = tuple(f.name for f in dataclasses.fields(FeatureMeta)
                 if f.default is dataclasses.MISSING)
# The keys a file of each version this stmil reads must hold (version 0: before source_fps was
# always written; :func:`migrate` fills it in).
_REQUIRED: dict[int, tuple[str, ...]] = {
    0: tuple(k for k in _CURRENT if k != "source_fps"),
    SCHEMA_VERSION: _CURRENT,
}


def _shown(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class VideoFeatures:
    """A dataset record with its memory-mapped features ``(n_clips, G*G, C)``, metadata and
    ``motion``: the motion energy of each cuboid of each clip ``(n_clips, G*G)``
    (:mod:`stmil.features.motion`, ``meta.motion``), None for features without it (an older
    stmil, imported ones)."""

    record: VideoRecord
    features: np.ndarray
    meta: FeatureMeta
    motion: np.ndarray | None = None

    @property
    def clip_ranges(self) -> np.ndarray:
        """Source-frame range of each clip, ``(n_clips, 2)`` half-open."""
        return meta_clip_ranges(self.meta)


def meta_motion(meta: FeatureMeta) -> np.ndarray | None:
    """The ``(n_clips, G*G)`` motion energy a feature file's metadata holds, or None."""
    return meta.motion


def meta_clip_ranges(meta: FeatureMeta) -> np.ndarray:
    """Source-frame range ``(n_clips, 2)`` of each clip of a feature file, from its metadata."""
    return clip_frame_ranges(meta.n_clips, meta.clip_len, meta.stride, meta.source_fps,
                             meta.resample_fps, meta.n_frames)


def read_feature_meta(path: Path | str, fix: str = REEXTRACT) -> FeatureMeta:
    """The validated metadata of one feature file ``<id>.json``: the one reader of that format.

    Raises :class:`FeatureError` naming ``path`` (and ending in ``fix``) when it is not UTF-8
    JSON, or is JSON of the wrong shape (not an object, a key missing or unknown, a value of
    the wrong type or range; :meth:`FeatureMeta.from_json`). ``OSError`` (a missing or
    unreadable file) passes through; it names the file itself.
    """
    path = Path(path)
    return FeatureMeta.from_json(path.read_bytes(), path, fix)


def file_digest(path: Path | str) -> tuple[int, str]:
    """``(byte size, sha256 hex)`` of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def array_mismatch(npy: Path | str, meta: FeatureMeta) -> str:
    """Why ``npy`` is not the array ``meta`` describes (``''`` when it is).

    Checks the byte size and sha256 recorded at extraction (when recorded), then the shape
    ``(n_clips, grid * grid, channels)``. ``OSError`` when the file cannot be read.
    """
    npy = Path(npy)
    if meta.npy_bytes is not None and npy.stat().st_size != meta.npy_bytes:
        return f"{npy.stat().st_size} bytes, its metadata records {meta.npy_bytes}"
    if meta.npy_sha256 is not None and file_digest(npy)[1] != meta.npy_sha256:
        return "its sha256 differs from the one its metadata records"
    try:
        arr = np.load(npy, mmap_mode="r")
    except ValueError as e:
        return f"not a NumPy array file ({e})"
    want = (meta.n_clips, meta.grid ** 2, meta.channels)
    if arr.shape != want:
        return f"shape {arr.shape}, its metadata says {want}"
    if arr.dtype != np.float16:  # the one dtype rule: extract and import both write float16
        return f"dtype {arr.dtype}; stmil feature files are float16"
    return ""


def load_features(feature_dir: Path | str, video_id: str) -> tuple[np.ndarray, FeatureMeta]:
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
        rec = fit_to_video(rec, meta.width, meta.height, meta.n_frames)  # boxes, frames
        out.append(VideoFeatures(rec, arr, meta, meta.motion))
    if missing:
        msg = f"{len(missing)} listed videos without features in {feature_dir}: {_names(missing)}"
        if not skip_missing:
            raise FeatureError(f"{msg} ({missing_fix})")
        log.warning("skipping %s", msg)
    if not out:
        raise FeatureError(f"no features found in {feature_dir} for the listed videos")
    ref = out[0]
    for key in CONSISTENT_KEYS:
        odd = [v.record.video_id for v in out if getattr(v.meta, key) != getattr(ref.meta, key)]
        if odd:
            raise FeatureError(f"{feature_dir}: features disagree on {key}: "
                               f"{ref.record.video_id} has {getattr(ref.meta, key)!r} but "
                               f"{_names(odd)} differ; extract them all with the same "
                               "settings (stmil extract --overwrite)")
    if check_finite:
        bad = [v.record.video_id for v in out if not np.isfinite(v.features).all()]
        if bad:
            files = _names([str(feature_dir / f"{b}.npy") for b in bad])
            raise FeatureError(f"NaN or Inf in {files}; extract them again with stmil extract "
                               "--overwrite")
    return out


def source_identity(path: Path | str) -> dict:
    """What a feature file records of its video: resolved path, byte size, mtime in ns.

    ``OSError`` naming the file when it cannot be read: a symlink loop is ``ELOOP`` (not
    ``Path.resolve``'s ``RuntimeError``)."""
    path = Path(os.path.realpath(path))  # a loop resolves to itself; stat raises ELOOP
    try:
        st = path.stat()
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise OSError(errno.ELOOP, "a symlink loop (its links lead back to themselves); point "
                                   "the link at a video or delete it", str(path)) from None
    return {"source": str(path), "source_bytes": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def source_mismatch(recorded: Mapping[str, Any], path: Path | str) -> str:
    """How ``path`` differs from the source ``recorded`` (:attr:`FeatureMeta.identity`, or
    what a scores file records) names (``''`` when it is that file).

    A record without the size and modification time (older files) never matches.
    """
    now = source_identity(path)
    if now["source"] != recorded.get("source"):
        return f"were made from {recorded.get('source')}, not {now['source']}"
    for key, what, show in (("source_bytes", "size", _bytes), ("source_mtime_ns",
                                                               "modification time", _utc)):
        if recorded.get(key) != now[key]:
            return (f"were made from {now['source']} when its {what} was "
                    f"{show(recorded.get(key))}; it is now {show(now[key])}")
    return ""


def _bytes(n: object) -> str:
    return f"{n} bytes" if isinstance(n, int) else repr(n)


def _utc(ns: object) -> str:
    """A modification time in nanoseconds as ``2026-11-27 20:24:27.554373989 UTC``."""
    if not isinstance(ns, int) or isinstance(ns, bool):
        return repr(ns)
    day = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 10**9))
    return f"{day}.{ns % 10**9:09d} UTC"


def write_features(out_dir: Path | str, video_id: str, array: np.ndarray, meta: FeatureMeta,
                   command: str = "extract") -> FeatureMeta:
    """Write ``<id>.npy`` and ``<id>.json`` as one unit; return the metadata written.

    The JSON is ``meta`` with the array file's byte size and sha256, computed from the bytes
    written. Both files are written to temporary files first, then renamed, JSON first (see
    the module docstring), with the folder's ledger (:mod:`stmil.ownership`, naming
    ``command``), renamed before both; either file present and not stmil's is refused
    (:class:`OutputError`). An ``OSError`` (a full disk) names the output file.
    """
    out_dir = Path(out_dir)
    buf = io.BytesIO()
    np.save(buf, array)
    data = buf.getvalue()
    meta = dataclasses.replace(meta, npy_bytes=len(data),
                               npy_sha256=hashlib.sha256(data).hexdigest())
    text = meta.to_json()
    commit(out_dir, [(out_dir / f"{video_id}.npy", lambda tmp: tmp.write_bytes(data)),
                      (out_dir / f"{video_id}.json",
                       lambda tmp: tmp.write_text(text, encoding="utf-8"))],
           command, legacy=legacy_feature_file, fix=NOT_OURS)
    return meta


def is_done(out_dir: Path | str, video_id: str) -> bool:
    """Whether ``<id>`` is finished: its JSON is valid and records the exact bytes (size and
    sha256) of the ``<id>.npy`` beside it.

    ``False`` when either file is missing, the array differs from the one recorded (an
    interrupted write, a damaged file) or the JSON predates recorded checksums. Raises
    :class:`FeatureError` naming the file when ``<id>.json`` is not feature metadata.
    """
    out_dir = Path(out_dir)
    json_path, npy = out_dir / f"{video_id}.json", out_dir / f"{video_id}.npy"
    if not json_path.is_file() or not npy.is_file():
        return False
    meta = read_feature_meta(json_path)
    if meta.npy_sha256 is None or meta.npy_bytes is None:
        return False
    try:
        return array_mismatch(npy, meta) == ""
    except OSError:
        return False


def check_ours(out_dir: Path | str, video_id: str,
               suffixes: Sequence[str] = (".json", ".npy")) -> None:
    """Raise (:class:`OutputError` or :class:`FeatureError`, one line naming the file) unless
    ``<id>.json`` / ``<id>.npy`` (those of ``suffixes``) are absent or stmil's own (the
    folder's ledger, :mod:`stmil.ownership`): what ``extract --overwrite`` and
    ``import-features`` may replace, whichever of them wrote it."""
    check_can_write(out_dir, [f"{video_id}{x}" for x in suffixes], legacy_feature_file,
                    NOT_OURS)


def legacy_feature_file(path: Path) -> bool:
    """Whether a feature file of a folder from before ledgers is stmil's (the old test): a
    ``.json`` that is feature metadata (:class:`FeatureError` otherwise), a ``.npy`` with such
    a JSON beside it (:class:`OutputError` otherwise)."""
    if path.suffix == ".json":
        read_feature_meta(path, fix=NOT_OURS)
        return True
    if path.suffix == ".npy":
        meta = path.with_suffix(".json")
        if not meta.exists():
            raise OutputError(f"{path}: exists without {meta.name}, so it is not features "
                              f"stmil wrote; {NOT_OURS}")
        read_feature_meta(meta, fix=NOT_OURS)
        return True
    return False
