"""Per-video views: the scores, maps, boxes and incidents of one video under each source.

A run's scores are computed as ``stmil score`` computes them (:class:`~stmil.mil.detector.Detector`
on the video's features, :func:`stmil.score.scores_from_maps`), and its incidents as
``stmil events`` finds them, with the run's calibration (or the default incident settings at
its threshold). A folder of ``<id>.scores.json`` files is read by :func:`stmil.score.read_scores`.
Views are kept in memory (keyed by the files' modification times); nothing is written
(a video browsers do not play is offered through :mod:`stmil.serve.proxy`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict
from pathlib import Path, PurePosixPath

import numpy as np

from stmil.cuboids import cuboid_boxes, predicted_boxes
from stmil.datasets import VideoRecord, fit_to_video
from stmil.errors import StmilError
from stmil.evaluation.evaluate import metric_threshold
from stmil.evaluation.incidents import match_incidents
from stmil.evaluation.metrics import frame_ap
from stmil.features.store import load_features, meta_clip_ranges, meta_motion
from stmil.live.calibrate import read_calibration
from stmil.live.incidents import (
    EventConfig,
    Incident,
    clips_from_maps,
    find_incidents,
    read_incidents,
)
from stmil.mil.detector import Detector
from stmil.mil.run import MODEL
from stmil.score import read_scores, scores_from_maps
from stmil.serve.catalog import SCORES_SUFFIX, Catalog, Source
from stmil.serve.paths import BROWSER_VIDEO, inside, media_url
from stmil.serve.proxy import PROXIES, proxy_problem
from stmil.timeline import frame_labels

#: Decimals kept of scores sent to the browser.
DECIMALS = 4
#: The route of a video's browser copy (:mod:`stmil.serve.proxy`), followed by its path.
PROXY_ROUTE = "/proxy/"


class VideoViews:
    """The per-video views of one :class:`Catalog` (see the module docstring)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()
        self._views: dict[tuple, dict] = {}
        self._detectors: dict[tuple, Detector] = {}
        self._events: dict[tuple, dict[str, list[Incident]]] = {}  # the last incidents file read

    def listing(self) -> dict:
        """Every test video (normal ones too) and every scored one, each with its label and,
        per source, ``peak``, ``ap``, ``events``, ``missed`` and ``incidents`` (or ``error``)."""
        sources = self.catalog.sources()
        records, problem = self.catalog.test_records()
        _, feats = self.catalog.dataset_paths()
        videos = []
        for vid, record in self._ids(sources, records).items():
            stats = {}
            for s in sources:
                if s.kind == "scores" and vid not in s.files:
                    continue
                if s.kind in ("run", "events") and record is None:
                    continue
                view = self.view(s, vid, record, feats)
                stats[s.name] = {"error": view["error"]} if view["error"] else view["stats"]
            videos.append({"id": vid, "label": None if record is None else record.label,
                           "category": record.category if record else "",
                           "sources": stats})
        return {"summary": self.catalog.summary(), "dataset_error": problem,
                "sources": [s.name for s in sources], "videos": videos}

    def detail(self, video_id: str) -> dict:
        """Everything the video page draws for ``video_id``; :class:`KeyError` when DIR has
        no such video."""
        sources = self.catalog.sources()
        records, _ = self.catalog.test_records()
        ids = self._ids(sources, records)
        if video_id not in ids:
            raise KeyError(f"no video {video_id!r} in this folder")
        record = ids[video_id]
        _, feats = self.catalog.dataset_paths()
        views = [self.view(s, video_id, record, feats) for s in sources
                 if (s.kind == "scores" and video_id in s.files)
                 or (s.kind in ("run", "events") and record is not None)]
        first = next((v for v in views if not v["error"] and v.get("n_frames")), {})
        n, fps = first.get("n_frames"), first.get("fps")
        width, height = first.get("width"), first.get("height")
        gt = record
        if record is not None and first:
            try:
                gt = fit_to_video(record, width, height, n)
            except StmilError:
                gt = record
        media, note = self._media(record, views)
        return {"id": video_id, "label": None if record is None else record.label,
                "category": record.category if record else "", "n_frames": n, "fps": fps,
                "width": width, "height": height, "media": media, "media_note": note,
                "intervals": [list(map(int, iv)) for iv in gt.intervals] if gt else [],
                "gt_boxes": {str(f): [[round(float(c), 2) for c in b] for b in bs]
                             for f, bs in sorted(gt.boxes.items())} if gt else {},
                "sources": views}

    def _ids(self, sources: list[Source], records: list[VideoRecord]
             ) -> dict[str, VideoRecord | None]:
        ids: dict[str, VideoRecord | None] = {r.video_id: r for r in records}
        for s in sources:
            for vid in s.files:
                ids.setdefault(vid, None)
        return ids

    def _media(self, record: VideoRecord | None, views: list[dict]) -> tuple[str | None, str]:
        """The URL of the video file (inside DIR; of its transcoded copy when browsers do not
        play it), and a note saying which, or why there is none."""
        root = self.catalog.root
        candidates = [record.path] if record is not None and record.path else []
        candidates += [v["source_video"] for v in views if v.get("source_video")]
        for path in candidates:
            url = media_url(root, path)
            if url is None:
                continue
            name = Path(str(path)).name
            if Path(str(path)).suffix.lower() not in BROWSER_VIDEO:
                problem = proxy_problem(root, inside(root, path))
                if problem is not None:
                    return None, (f"{name}: a format browsers do not play, and its browser "
                                  f"copy cannot be made: {problem}")
                return PROXY_ROUTE + url.removeprefix("/media/"), (
                    f"{name}: a format browsers do not play, shown through an H.264 copy "
                    f"made once in {PROXIES.as_posix()}")
            return url, ""
        if candidates:
            return None, "the video file lies outside the served folder: not served"
        return None, "no video file is known for this id"

    # --- one source, one video ------------------------------------------------------------

    def view(self, source: Source, video_id: str, record: VideoRecord | None,
             feats: Path | None) -> dict:
        """The scores of ``video_id`` under ``source`` (cached), a run's computed on the
        features in ``feats``; ``error`` says why there are none."""
        try:
            key = (source.name, video_id, *self._stamp(source, video_id, feats))
        except OSError as e:
            return _error(source, f"{e.filename}: {e.strerror}")
        with self._lock:
            if key not in self._views:
                self._views[key] = self._compute(source, video_id, record, feats)
            return self._views[key]

    def _stamp(self, source: Source, video_id: str, feats: Path | None) -> tuple:
        if source.kind == "scores":
            return (source.files[video_id].stat().st_mtime_ns,)
        if source.kind == "events":
            st = source.path.stat()
            return (st.st_mtime_ns, st.st_size)
        stamps = [_mtime(source.path / MODEL), _mtime(source.path / "calibration.json")]
        if feats is not None:
            stamps.append(_mtime(feats / f"{video_id}.json"))
        return (str(feats), *stamps)

    def _compute(self, source: Source, video_id: str, record: VideoRecord | None,
                 feats: Path | None) -> dict:
        try:
            if source.kind == "scores":
                return self._from_scores_file(source, video_id, record)
            if source.kind == "events":
                return self._from_events_file(source, video_id, record)
            return self._from_run(source, video_id, record, feats)
        except (StmilError, ValueError, KeyError, OSError) as e:
            return _error(source, " ".join(str(e).split()))

    def _from_scores_file(self, source: Source, video_id: str,
                          record: VideoRecord | None) -> dict:
        s = read_scores(source.files[video_id])
        view = _view(source, s, s["clip_maps"], s["clip_ranges"], None, None, record)
        view["source_video"] = s.get("source")
        return view

    def _from_events_file(self, source: Source, video_id: str,
                          record: VideoRecord | None) -> dict:
        """The incidents an incidents file gives ``video_id`` (none when it names it not), with
        the per-video incident numbers; no scores, no maps."""
        st = source.path.stat()
        key = (str(source.path), st.st_mtime_ns, st.st_size)
        if key not in self._events:
            self._events = {key: incidents_by_video(source.path)}  # one file read at a time
        incidents = self._events[key].get(video_id, [])
        return {"name": source.name, "kind": source.kind, "error": None, "warning": None,
                "incidents": [_incident(i) for i in incidents],
                "stats": _stats(None, incidents, record)}

    def _from_run(self, source: Source, video_id: str, record: VideoRecord | None,
                  feats: Path | None) -> dict:
        if feats is None:
            raise StmilError("no features folder inside the served folder to score this "
                             "run's videos on")
        detector = self._detector(source.path)
        features, meta = load_features(feats, video_id)
        where = feats / f"{video_id}.json"
        detector.check_features(meta, where)
        ranges = meta_clip_ranges(meta)
        maps = detector.maps(features, meta_motion(meta), str(where))
        scores = scores_from_maps(maps, detector.config.grid, meta, ranges)
        try:  # a bad calibration.json costs the threshold and incidents, not the curve
            value, origin = metric_threshold(source.path)
            cal = read_calibration(source.path)
        except StmilError as e:
            view = _view(source, scores, maps, ranges, None, None, record)
            return view | {"warning": " ".join(str(e).split())}
        events = cal.events if cal is not None else EventConfig(threshold=value)
        return _view(source, scores, maps, ranges, {"value": value, "source": origin}, events,
                     record)

    def _detector(self, run: Path) -> Detector:
        key = (str(run), _mtime(run / MODEL))
        if key not in self._detectors:
            self._detectors[key] = Detector.load(run)
        return self._detectors[key]


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _error(source: Source, message: str) -> dict:
    return {"name": source.name, "kind": source.kind, "error": message}


def _view(source: Source, scores: dict, maps: np.ndarray, ranges: np.ndarray,
          threshold: dict | None, events: EventConfig | None,
          record: VideoRecord | None) -> dict:
    """What the page draws for one source: frame scores, per-clip maps and top boxes (none
    where the map is a tie: a grid-1 model cannot say where), incidents and per-video stats.

    ``maps``: ``(n_clips, G*G)``; ``ranges``: ``(n_clips, 2)`` source frames.
    """
    n, fps, g = int(scores["n_frames"]), float(scores["fps"]), int(scores["grid"])
    width, height = int(scores["width"]), int(scores["height"])
    maps = np.asarray(maps, dtype=np.float64).reshape(len(ranges), g * g)
    cells = cuboid_boxes(width, height, g)
    tie = maps.max(axis=1) - maps.min(axis=1) <= 1e-9
    top = predicted_boxes(maps, cells)
    frame_scores = np.asarray(scores["frame_scores"], dtype=np.float64)
    incidents = []
    if events is not None:
        incidents = find_incidents(clips_from_maps(maps, ranges, cells, events.threshold),
                                   events, fps)
    if record is not None:
        try:
            record = fit_to_video(record, width, height, n)
        except StmilError:
            pass
    return {"name": source.name, "kind": source.kind, "error": None, "warning": None,
            "n_frames": n, "fps": fps, "width": width, "height": height, "grid": g,
            "model_grid": scores.get("model_grid"),
            "cells": cells.round(2).tolist(),
            "clip_ranges": np.asarray(ranges).astype(int).tolist(),
            "clip_maps": maps.round(DECIMALS).tolist(),
            "clip_boxes": [None if t else [round(float(c), 2) for c in b]
                           for t, b in zip(tie, top)],
            "frame_scores": frame_scores.round(DECIMALS).tolist(),
            "threshold": threshold,
            "events": None if events is None else asdict(events),
            "incidents": [_incident(i) for i in incidents],
            "stats": _stats(frame_scores, incidents if events is not None else None, record)}


def _incident(i: Incident) -> dict:
    return {"id": i.id, "start_frame": i.start_frame, "end_frame": i.end_frame,
            "peak_frame": i.peak_frame, "peak_score": i.peak_score, "box": i.box}


def video_of(source: str) -> str:
    """The video id an incident's ``source`` names: its file name less ``.scores.json`` or
    its suffix (``data/Fighting001_x264.mp4``, ``out/Fighting001_x264.scores.json`` ->
    ``Fighting001_x264``)."""
    name = PurePosixPath(source.replace("\\", "/")).name
    return name.removesuffix(SCORES_SUFFIX) if name.endswith(SCORES_SUFFIX) \
        else PurePosixPath(name).stem


def incidents_by_video(path: Path) -> dict[str, list[Incident]]:
    """The finished incidents of a ``stmil events`` or ``stmil watch`` file (``incident`` and
    ``end`` lines, read by :func:`stmil.live.incidents.read_incidents`) by video id
    (:func:`video_of`); :class:`ConfigError` naming the file and line when one is malformed."""
    out: dict[str, list[Incident]] = {}
    for kind, inc in read_incidents(path):
        if kind in ("incident", "end"):
            out.setdefault(video_of(inc.source), []).append(inc)
    return out


def _stats(frame_scores: np.ndarray | None, incidents: list | None,
           record: VideoRecord | None) -> dict:
    """``peak`` (frame score) and its frame; for an anomalous video ``ap`` (frame AP within
    the video) and, with incidents, ``events`` and ``missed`` (events no incident found, as in
    docs/metrics.md "Incidents"); ``incidents`` and ``false`` (incidents overlapping no event).
    Without ``frame_scores`` (an incidents file): the incident numbers alone."""
    out: dict = {"peak": None, "peak_frame": None, "ap": None, "events": None,
                 "missed": None, "incidents": None if incidents is None else len(incidents),
                 "false": None}
    intervals = list(record.intervals) if record is not None else []
    n = len(frame_scores) if frame_scores is not None else max((e for _, e in intervals),
                                                                default=0)
    if frame_scores is not None:
        out.update(peak=_num(frame_scores.max()), peak_frame=int(frame_scores.argmax()))
    if frame_scores is not None and record is not None and record.label == 1 and intervals:
        labels = frame_labels(intervals, n)
        if labels.any() and not labels.all():
            out["ap"] = _num(frame_ap(frame_scores, labels))
    if incidents is not None and record is not None:
        spans = [(max(0, s), min(n, e)) for s, e in intervals]
        found, false = match_incidents(incidents, spans, record.boxes)
        out.update(events=len(found), missed=len(found) - sum(found), false=false)
    return out


def _num(x: float) -> float | None:
    x = float(x)
    return round(x, DECIMALS) if math.isfinite(x) else None
