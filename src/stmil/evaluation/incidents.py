"""Incident-level numbers: ground-truth events found, missed, and false incidents per hour.

Incidents are found exactly as ``stmil events`` finds them (:mod:`stmil.live.incidents`),
with the run's calibrated settings. Definitions (docs/metrics.md, "Incidents"):

- a ground-truth **event** is one annotated interval of an anomalous test video;
- it is **found** when an incident overlaps it in time (at least one common frame) and, where
  the event has boxes on the frames of that overlap, the incident's box (the box at its peak)
  intersects one of them (area > 0, as for pointing accuracy); one incident can find several
  events;
- a **false incident** overlaps no event of its video (every incident of a normal video is
  false); false incidents per hour divide by the hours of test video outside every event.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stmil.cuboids import cuboid_boxes
from stmil.evaluation.paper_metrics import loc_false_positives
from stmil.live.calibrate import read_calibration
from stmil.live.incidents import EventConfig, Incident, clips_from_maps, find_incidents


def _hits(box: list[float], gt: np.ndarray) -> bool:
    """Whether ``box`` (x1, y1, x2, y2) intersects any of ``gt`` ``(K, 4)`` with area > 0."""
    if not len(gt):
        return False
    w = np.minimum(box[2], gt[:, 2]) - np.maximum(box[0], gt[:, 0])
    h = np.minimum(box[3], gt[:, 3]) - np.maximum(box[1], gt[:, 1])
    return bool(((w > 0) & (h > 0)).any())


def match_incidents(incidents: Sequence[Incident], intervals: Sequence[tuple[int, int]],
                    boxes: dict[int, list]) -> tuple[list[bool], int]:
    """For one video: whether each event (interval) is found, and how many incidents are
    false (see the module docstring)."""
    found = []
    for s, e in intervals:
        hit = False
        for inc in incidents:
            lo, hi = max(s, inc.start_frame), min(e, inc.end_frame)
            if lo >= hi:
                continue
            gt = [b for f in range(lo, hi) for b in boxes.get(f, [])]
            if not gt or _hits(inc.box, np.asarray(gt, dtype=float).reshape(-1, 4)):
                hit = True
                break
        found.append(hit)
    false = sum(1 for inc in incidents
                if not any(max(s, inc.start_frame) < min(e, inc.end_frame) for s, e in intervals))
    return found, false


def incident_metrics(videos: Sequence, maps: Sequence[np.ndarray], config: EventConfig) -> dict:
    """Incident numbers over test videos (``VideoFeatures`` with their cuboid maps
    ``(n_clips, G*G)``): ``events``, ``found``, ``missed``, ``recall`` (None without events),
    ``false``, ``false_per_hour``, ``hours_outside_events`` and the settings used."""
    n_found = n_events = n_false = 0
    seconds = 0.0
    for v, m in zip(videos, maps):
        meta = v.meta
        fps = float(meta.source_fps)
        boxes = cuboid_boxes(meta.width, meta.height, meta.grid)
        incs = find_incidents(clips_from_maps(m, v.clip_ranges, boxes, config.threshold),
                              config, fps)
        intervals = [(max(0, s), min(meta.n_frames, e)) for s, e in v.record.intervals]
        found, false = match_incidents(incs, intervals, v.record.boxes)
        n_found += sum(found)
        n_events += len(found)
        n_false += false
        inside = np.zeros(meta.n_frames, dtype=bool)
        for s, e in intervals:
            inside[s:e] = True
        seconds += float((~inside).sum()) / fps
    hours = seconds / 3600
    return {"threshold": config.threshold, "hysteresis": config.hysteresis,
            "min_duration": config.min_duration, "merge_gap": config.merge_gap,
            "events": n_events, "found": n_found, "missed": n_events - n_found,
            "recall": n_found / n_events if n_events else None, "false": n_false,
            "false_per_hour": n_false / hours if hours > 0 else None,
            "hours_outside_events": hours}


def format_incidents(m: dict) -> str:
    """One line for the terminal."""
    recall = "-" if m["recall"] is None else f"{m['recall']:.3f}"
    rate = "-" if m["false_per_hour"] is None else f"{m['false_per_hour']:.2f}"
    return (f"incidents (threshold {m['threshold']:.4f}): found {m['found']} of {m['events']} "
            f"events (recall {recall}), missed {m['missed']}, {m['false']} false "
            f"({rate} per hour outside events)")


def run_incident_metrics(run, videos: Sequence, maps: Sequence[np.ndarray]) -> dict | None:
    """:func:`incident_metrics` with the run's calibration (``RUN/calibration.json``), plus
    ``loc_false_positives`` at its threshold (false-positive cuboids per anomalous clip), or
    None when the run has none (``stmil calibrate`` makes one)."""
    cal = read_calibration(run)
    if cal is None:
        return None
    return incident_metrics(videos, maps, cal.events) | {
        "loc_false_positives": loc_false_positives(videos, maps, cal.threshold)}
