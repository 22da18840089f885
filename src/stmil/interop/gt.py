"""Frame-label and frame-score vectors of a test list, as other projects' scripts read them.

RTFM, MGFN, UR-DMU and most weakly supervised VAD code evaluate against one flat vector of
frame labels: for each video of the test list, in list order, one label per frame of its
feature snippets (16 x T), concatenated. ``stmil gt`` writes that vector from a dataset's
annotations, ``stmil export`` the model's frame scores in the same order and lengths, so
``roc_auc_score(np.load("gt.npy"), np.load("scores.npy"))`` is the frame AUC.

Each vector is ``OUT/<kind>.npy`` (float32, ``(total,)``) with ``OUT/<kind>.json``, its
manifest (one writer, :func:`write_vector`; one reader, :func:`read_vector`): the tail policy,
and each video's id, label, offset and length. The pair is committed as one unit.

Tail policies (where most alignment bugs come from):

- ``clips`` (default, the community's): ``n_clips x stride`` entries per video (16 x T for
  16-frame snippets); frames after the last whole snippet are left out, and entries past the
  video's last frame (a padded tail clip) repeat its last frame.
- ``frames``: one entry per frame of the video, ``n_frames``.

Labels follow one of two conventions: ``stmil`` (default, the correct reading: UCF-Crime's
1-based inclusive ``s e`` is frames ``s-1 .. e-1``) or ``rtfm`` (RTFM's ``make_gt_ucf.py``, the
``gt-ucf.npy`` published AUCs were computed on: frames ``s .. e`` as 0-based indices, and a
last event that runs past ``16 T`` written up to frame ``e - 1``, longer than ``16 T``).

The order of the videos is :mod:`stmil.interop.order`'s: a community list's (``--list``) or the
dataset's, recorded in the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stmil import safejson
from stmil.atomic import check_writable
from stmil.datasets import load_dataset
from stmil.datasets.record import VideoRecord
from stmil.errors import ConfigError, OutputError, StmilError
from stmil.features.store import FeatureMeta, VideoFeatures, load_dataset_features
from stmil.interop import CONVENTIONS, TAILS
from stmil.interop.order import VideoList, check_same_videos, in_list_order, read_video_list
from stmil.ownership import check_can_write, commit
from stmil.timeline import frame_labels, frame_scores_from_clips

log = logging.getLogger(__name__)

KINDS = ("gt", "scores")
MANIFEST_FORMAT = "stmil-frame-vector"
MANIFEST_VERSION = 1


class VectorError(StmilError, ValueError):
    """A frame-vector file or manifest that is not what stmil wrote."""


def vector_length(meta: FeatureMeta, tail: str) -> int:
    """Entries of one video under ``tail``: ``n_clips * stride`` (``clips``) or ``n_frames``."""
    if tail not in TAILS:
        raise ConfigError(f"tail must be one of {', '.join(TAILS)}, got {tail!r}")
    return meta.n_clips * meta.stride if tail == "clips" else meta.n_frames


def fit_tail(per_frame: np.ndarray, length: int) -> np.ndarray:
    """``(length,)`` from a video's ``(n_frames,)`` values: cut, or extended with the last."""
    idx = np.minimum(np.arange(length), len(per_frame) - 1)
    return per_frame[idx]


def gt_vectors(videos: Sequence[VideoFeatures], tail: str = "clips") -> list[np.ndarray]:
    """Per-video frame labels ``(length_v,)`` float32 (1 = anomalous) under ``tail``."""
    return [fit_tail(frame_labels(list(v.record.intervals), v.meta.n_frames),
                     vector_length(v.meta, tail)).astype(np.float32) for v in videos]


def score_vectors(videos: Sequence[VideoFeatures], maps: Sequence[np.ndarray],
                  tail: str = "clips") -> list[np.ndarray]:
    """Per-video frame scores ``(length_v,)`` float32 from cuboid maps ``(n_clips, G*G)``: a
    frame's score is its clip's top cuboid, as in ``stmil evaluate``."""
    return [fit_tail(frame_scores_from_clips(m.max(axis=1), v.clip_ranges, v.meta.n_frames),
                     vector_length(v.meta, tail)).astype(np.float32)
            for v, m in zip(videos, maps, strict=True)]


def rtfm_labels(events: Sequence[tuple[int, int]], n: int) -> np.ndarray:
    """RTFM's ``make_gt_ucf.py`` labels of one video ``(n_v,)`` float32, from its events as
    UCF-Crime writes them (1-based inclusive ``(s, e)``) and ``n = 16 T`` frames.

    Its rule, entry by entry: zeros up to index ``s``, ones on indices ``s .. e``, and so on for
    each event; after the last one, zeros up to ``n`` when ``e + 1 <= n``, else the ones stop at
    ``e - 1`` and the video has ``e`` entries instead of ``n``. A video without events is ``n``
    zeros.
    """
    if not events:
        return np.zeros(n, np.float32)
    runs, cursor = [], 0  # (value, count) in the script's order; a range(a, b) has max(b-a, 0)
    *first, (s, e) = sorted(events)
    for s0, e0 in first:
        runs += [(0.0, s0 - cursor), (1.0, e0 + 1 - s0)]
        cursor = e0 + 1
    runs.append((0.0, s - cursor))
    runs += [(1.0, e + 1 - s), (0.0, n - (e + 1))] if e + 1 <= n else [(1.0, e - s)]
    return np.concatenate([np.full(max(c, 0), v, np.float32) for v, c in runs])


def rtfm_gt_vectors(videos: Sequence[VideoFeatures], raw: dict[str, VideoRecord]
                    ) -> list[np.ndarray]:
    """Per-video labels under RTFM's rule (:func:`rtfm_labels`) from the annotation as read
    (``raw``: id -> record before its events were cut to the video), ``16 T`` frames each."""
    out = []
    for v in videos:
        rec = raw[v.record.video_id]
        events = [(s + 1, e) for s, e in rec.intervals] if rec.label else []
        out.append(rtfm_labels(events, v.meta.n_clips * v.meta.stride))
    return out


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


NOT_OURS = "refusing to overwrite it (choose another --out)"


def _legacy_ours(path: Path) -> bool:
    """In a folder from before ledgers (the old test): a ``<kind>.json`` that is a manifest,
    a ``<kind>.npy`` with one beside it; anything else is refused naming the file."""
    kind = path.name.rsplit(".", 1)[0]
    js = path.with_suffix(".json")
    if path.suffix == ".npy" and not js.exists():
        raise OutputError(f"{path}: exists without {js.name}, so stmil did not write it; "
                          f"{NOT_OURS}")
    try:
        read_manifest(js)
    except (VectorError, OSError) as e:
        raise OutputError(f"{path}: exists and is not a stmil {kind} vector; {NOT_OURS}"
                          ) from e
    return True


def write_vector(out: Path | str, kind: str, videos: Sequence[VideoFeatures],
                 vectors: Sequence[np.ndarray], tail: str, extra: dict | None = None) -> Path:
    """Write ``out/<kind>.npy`` (the vectors concatenated) and its manifest as one unit.

    ``kind``: ``gt`` or ``scores``. A ``<kind>.npy`` or ``<kind>.json`` there that is not
    stmil's (the folder's ledger, :mod:`stmil.ownership`) is refused (:class:`OutputError`).
    Returns the ``.npy`` path.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    out = check_writable(out)
    names = [f"{kind}.npy", f"{kind}.json"]
    command = "gt" if kind == "gt" else "export"
    check_can_write(out, names, _legacy_ours, NOT_OURS)
    flat = (np.concatenate(vectors) if vectors else np.zeros(0)).astype(np.float32)
    data = _npy_bytes(flat)
    entries, offset = [], 0
    for v, vec in zip(videos, vectors, strict=True):
        entries.append({"id": v.record.video_id, "label": v.record.label, "offset": offset,
                        "length": len(vec), "n_frames": v.meta.n_frames,
                        "n_clips": v.meta.n_clips})
        offset += len(vec)
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "kind": kind,
                "tail": tail, "total": offset, "dtype": "float32",
                "npy_sha256": hashlib.sha256(data).hexdigest(), **(extra or {}),
                "videos": entries}
    text = json.dumps(manifest, indent=1) + "\n"
    commit(out, [(out / names[0], lambda t: t.write_bytes(data)),
                 (out / names[1], lambda t: t.write_text(text, encoding="utf-8"))], command,
           _legacy_ours, NOT_OURS)
    return out / f"{kind}.npy"


def read_manifest(path: Path | str) -> dict:
    """A validated manifest: :class:`VectorError` naming ``path`` when it is not one."""
    path = Path(path)
    try:
        m = safejson.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise VectorError(f"{path}: not a stmil frame-vector manifest (not JSON)") from e
    if not (isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT
            and m.get("version") == MANIFEST_VERSION and m.get("kind") in KINDS
            and isinstance(m.get("videos"), list) and isinstance(m.get("total"), int)):
        raise VectorError(f"{path}: not a stmil frame-vector manifest (format "
                          f"{MANIFEST_FORMAT} version {MANIFEST_VERSION} expected)")
    offset = 0
    for i, e in enumerate(m["videos"]):
        if not (isinstance(e, dict) and e.get("offset") == offset
                and isinstance(e.get("length"), int) and e["length"] >= 0
                and isinstance(e.get("id"), str)):
            raise VectorError(f"{path}: videos[{i}] is not an entry with id, offset {offset} "
                              "and length")
        offset += e["length"]
    if offset != m["total"]:
        raise VectorError(f"{path}: lengths add up to {offset}, total says {m['total']}")
    return m


def read_vector(out: Path | str, kind: str) -> tuple[dict[str, np.ndarray], dict]:
    """Each video's vector (id -> ``(length,)`` float32) of ``out/<kind>.npy``, and the
    manifest; :class:`VectorError` when the array is not the one the manifest describes."""
    out = Path(out)
    m = read_manifest(out / f"{kind}.json")
    npy = out / f"{kind}.npy"
    raw = npy.read_bytes()
    if hashlib.sha256(raw).hexdigest() != m.get("npy_sha256"):
        raise VectorError(f"{npy}: does not match {kind}.json (sha256 differs); write both "
                          "again")
    arr = np.load(io.BytesIO(raw), allow_pickle=False)
    return {e["id"]: arr[e["offset"]:e["offset"] + e["length"]] for e in m["videos"]}, m


def _ordered(videos: list[VideoFeatures], listed: VideoList | None, split: str
             ) -> list[VideoFeatures]:
    by_id = {v.record.video_id: v for v in videos}
    return [by_id[i] for i in in_list_order(list(by_id), listed,
                                            f"the {split} split with features")]


def export_vectors(data: str | Path, features: str | Path, out: str | Path, *,
                   run: str | Path | None = None, split: str = "test", format: str = "auto",
                   tail: str = "clips", skip_missing: bool = False,
                   video_list: str | Path | None = None, convention: str = "stmil") -> Path:
    """``stmil gt`` (``run`` None: the labels) or ``stmil export`` (the run's frame scores):
    the vector of ``split`` in the order of ``video_list`` (a community list naming exactly
    the split's videos) or else the dataset's list, written to ``out``. ``convention``
    (labels only): ``stmil`` or ``rtfm`` (RTFM's rule; needs ``tail="clips"``). Returns the
    ``.npy`` path."""
    if tail not in TAILS:
        raise ConfigError(f"tail must be one of {', '.join(TAILS)}, got {tail!r}")
    if convention not in CONVENTIONS:
        raise ConfigError(f"convention must be one of {', '.join(CONVENTIONS)}, got "
                          f"{convention!r}")
    if convention == "rtfm" and tail != "clips":
        raise ConfigError("--convention rtfm writes RTFM's 16 x T labels a video; leave "
                          "--tail at clips")
    listed = read_video_list(video_list) if video_list is not None else None
    kind = "gt" if run is None else "scores"  # refused before any work, as when written
    check_can_write(out, [f"{kind}.npy", f"{kind}.json"], _legacy_ours, NOT_OURS)
    records = load_dataset(data, split, format)
    if listed is not None and not skip_missing:  # before reading any features
        check_same_videos(listed, [r.video_id for r in records], f"the {split} split")
    videos = _ordered(load_dataset_features(records, features, skip_missing), listed, split)
    extra = {"split": split, "data": str(Path(data).resolve()),
             "features": str(Path(features).resolve()),
             "order": listed.describe() if listed else {"rule": "dataset", "split": split}}
    if run is None:
        extra["convention"] = convention
        if convention == "stmil":
            return write_vector(out, "gt", videos, gt_vectors(videos, tail), tail, extra)
        vectors = rtfm_gt_vectors(videos, {r.video_id: r for r in records})
        longer = [v.record.video_id for v, vec in zip(videos, vectors, strict=True)
                  if len(vec) != v.meta.n_clips * v.meta.stride]
        if longer:
            log.warning("--convention rtfm: %d videos (%s) have an event past their last "
                        "snippet and get more than 16 x T labels, as in RTFM's rule; their "
                        "gt no longer lines up with 16 x T scores", len(longer),
                        ", ".join(longer[:3]) + (" ..." if len(longer) > 3 else ""))
        return write_vector(out, "gt", videos, vectors, tail, extra)
    from stmil.mil.detector import Detector  # deferred: torch, only when scoring (export)

    detector = Detector.load(run)
    detector.check_features(videos[0].meta, run)
    maps = [detector.maps(v.features, v.motion, str(Path(features) / f"{v.record.video_id}.json"))
            for v in videos]
    extra["run"] = str(Path(run).resolve())
    return write_vector(out, "scores", videos, score_vectors(videos, maps, tail), tail, extra)
