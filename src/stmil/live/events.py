"""``stmil events``: incidents of videos or ``<id>.scores.json`` files, as JSON lines.

A video is scored on the way with the run's model and clip settings (as ``stmil score``
would); a scores file is read with :func:`stmil.score.read_scores`. The threshold comes from
the run's ``calibration.json`` unless one is given.

Evidence (``--snapshots``, ``--clips``) is made only from the very video that was scored: a
scores file records its video's size and modification time (as a feature file does), and a
video changed since is refused for that incident. Evidence that cannot be made is said beside
the incident's line (``snapshot_error``, ``clip_error``); the line itself is always written.
``--out`` is replaced only when it is the file ``events`` wrote (the folder's ownership
ledger), never a log that ``stmil watch`` appends to.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stmil.cuboids import cuboid_boxes
from stmil.errors import ConfigError, ModelError, OutputError, StmilError
from stmil.features.store import meta_clip_ranges, meta_motion, source_mismatch
from stmil.features.video import iter_frames
from stmil.live.calibrate import read_calibration
from stmil.live.clip import clip_name, video_clip
from stmil.live.incidents import (
    EventConfig,
    Incident,
    clips_from_maps,
    find_incidents,
    incident_line,
    is_incidents_file,
    read_incidents,
)
from stmil.live.snapshot import describe, prepare_evidence_dir, snapshot_name, write_snapshot
from stmil.ownership import Ledger, commit

log = logging.getLogger(__name__)

SCORES_SUFFIX = ".scores.json"


def event_config(run: str | Path, threshold: float | None = None,
                 hysteresis: float | None = None, min_duration: float | None = None,
                 merge_gap: float | None = None) -> EventConfig:
    """The incident settings: the run's calibration (``calibration.json``), each value
    overridden by an argument that is not None; without a calibration, ``threshold`` is
    required."""
    cal = read_calibration(run)
    if cal is None and threshold is None:
        raise ConfigError(f"{run}: no calibration.json; run stmil calibrate {run} --data ROOT "
                          "--features FEATURES first, or pass --threshold")
    base = cal.events if cal is not None else EventConfig()
    given = {"threshold": threshold, "hysteresis": hysteresis, "min_duration": min_duration,
             "merge_gap": merge_gap}
    values = {k: getattr(base, k) if v is None else v for k, v in given.items()}
    return EventConfig(**values)


@dataclass
class ScoredVideo:
    """What incidents are found from: cuboid maps ``(n_clips, G*G)`` and clip ranges
    ``(n_clips, 2)`` (source frames), with the video's frame rate, size and grid, and what
    was recorded of the video when it was scored (``source_bytes``, ``source_mtime_ns``; empty
    for a scores file from before they were recorded)."""

    video_id: str
    source: str
    maps: np.ndarray
    clip_ranges: np.ndarray
    fps: float
    width: int
    height: int
    grid: int
    identity: dict = field(default_factory=dict)
    where: str = ""  # the file that recorded ``identity`` (a scores file), for messages

    def incidents(self, config: EventConfig) -> list[Incident]:
        boxes = cuboid_boxes(self.width, self.height, self.grid)
        return find_incidents(clips_from_maps(self.maps, self.clip_ranges, boxes,
                                              config.threshold), config, self.fps, self.source)


def _from_scores(path: Path, detector) -> ScoredVideo:
    from stmil.score import read_scores  # deferred: torch (stmil.score loads the model)

    s = read_scores(path)
    c = detector.config
    if s["grid"] != c.feature_grid or s.get("model_grid", c.grid) != c.grid:
        raise ConfigError(f"{path}: scored by a grid {s.get('model_grid')} model on grid "
                          f"{s['grid']} features; this run is grid {c.grid} on grid "
                          f"{c.feature_grid} features (score it with this run)")
    return ScoredVideo(path.name.removesuffix(SCORES_SUFFIX), str(s.get("source") or path),
                       s["clip_maps"], s["clip_ranges"], s["fps"], int(s["width"]),
                       int(s["height"]), int(s["grid"]), _identity(s), str(path))


def _identity(d: dict) -> dict:
    """What ``d`` (a feature JSON or scores file) records of its video: resolved path, size
    and modification time; ``{}`` when it lacks any of them."""
    keys = ("source", "source_bytes", "source_mtime_ns")
    return {k: d[k] for k in keys} if all(d.get(k) is not None for k in keys) else {}


def _from_video(path: Path, detector, cache: dict) -> ScoredVideo:
    """Extract (with the run's settings; the network is loaded once into ``cache``) and
    score one video."""
    # deferred: torch and I3D, loaded only to score a video
    from stmil.features.extract import extract_video
    from stmil.score import video_extractor

    if "extractor" not in cache:
        cache["extractor"] = video_extractor(detector, cache["device"])
    features, meta = extract_video(path, *cache["extractor"])
    maps = detector.maps(features, meta_motion(meta), str(path))
    return ScoredVideo(path.stem, str(path), maps,
                       meta_clip_ranges(meta), float(meta.source_fps), meta.width,
                       meta.height, meta.grid, _identity(meta.identity), str(path))


def check_source(video: ScoredVideo) -> None:
    """:class:`ConfigError` when ``video.source`` is not the video that was scored (another
    size or modification time: replaced or edited since); a scores file that recorded neither
    (an older stmil) cannot be checked, and a warning says so."""
    if not os.path.isfile(video.source):
        raise ConfigError(f"{video.source}: not found (the video of {video.where}); put it "
                          "back, or score the video again")
    if not video.identity:
        log.warning("%s", f"{video.where}: records no size or modification time of "
                          f"{video.source} (written by an older stmil): cannot check that it "
                          "is the video that was scored; score it again to record them")
        return
    why = source_mismatch(video.identity, video.source)
    if why:
        raise ConfigError(f"{video.source}: changed since {video.where} was made (the scores "
                          f"{why}); score the video again")


def peak_frame(source: str, index: int) -> np.ndarray:
    """Frame ``index`` ``(H, W, 3)`` uint8 RGB of a video, decoded with PyAV."""
    for k, frame in enumerate(iter_frames(source)):
        if k == index:
            return frame
    raise ConfigError(f"{source}: has no frame {index}")


def _only_incident_lines(path: Path) -> bool:
    """Whether ``path`` holds only ``"type": "incident"`` lines (what events writes)."""
    try:
        return all(kind == "incident" for kind, _ in read_incidents(path))
    except (ConfigError, OSError, UnicodeDecodeError):
        return False


def _legacy_events_file(path: Path) -> bool:
    """The test for a file from before ledgers: one or more ``incident`` lines and nothing
    else. An empty file proves nothing (a user's as likely as events' "no incidents"): the
    user's, unless the ledger names it."""
    try:
        if path.stat().st_size == 0:
            return False
    except OSError:
        return False
    return _only_incident_lines(path)


OUT_FIX = "give --out another path"


def check_out(out: Path) -> None:
    """Refuse (:class:`OutputError`) an ``--out`` that events may not replace: anything but
    the file events itself wrote there, unchanged since (the folder's ledger; in a folder from
    before ledgers, a file holding only ``incident`` lines). A log that ``stmil watch``
    appends to is never replaced."""
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give --out a file path like "
                          f"{out / 'incidents.jsonl'}")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist; create it first")
    if not os.path.lexists(out):
        return
    ledger = Ledger.load(out.parent)
    wrote = ledger.files.get(out.name, {}).get("command", "events")
    if ledger.owns(out.name, _legacy_events_file) and wrote == "events":
        return
    if not is_incidents_file(out):
        why = "exists and is not a stmil incidents file; refusing to overwrite it"
    elif not out.stat().st_size:
        why = ("exists (an empty file that stmil events did not write there); refusing to "
               "overwrite it")
    elif not _only_incident_lines(out):
        why = ("holds stmil watch's start/update/end lines (a log that watch appends to), "
               "which stmil events never replaces")
    else:
        why = ("exists and is not the file stmil events wrote there (or it was changed "
               "since); refusing to overwrite it")
    raise OutputError(f"{out}: {why}; {OUT_FIX}")


def events_inputs(
    inputs: Sequence[str | Path],
    run: str | Path,
    *,
    config: EventConfig,
    out: str | Path | None = None,
    snapshots: str | Path | None = None,
    clips: str | Path | None = None,
    device: str = "auto",
    emit: Callable[[str], None] | None = None,
) -> tuple[list[Incident], list[dict]]:
    """Incidents of every input (videos or ``<id>.scores.json``): returns (incidents, failed).

    Lines go to ``emit`` as each input is done (default: stdout when ``out`` is None); with
    ``out`` they are also written there at the end, as one file, atomically (see
    :func:`check_out`). ``snapshots``: a folder for one JPEG per incident, ``clips``: for one
    MP4 per incident (:mod:`stmil.live.clip`); both are proved writable first. Evidence that
    cannot be made (the video changed or gone, a full disk) leaves its incident's line, with
    ``snapshot_error`` or ``clip_error`` beside it, and is listed in ``failed``. One failed
    input never stops the rest; a model that cannot score, or an output file in the way that
    is not stmil's, stops the whole call.
    """
    from stmil.mil.detector import Detector  # deferred: torch

    detector = Detector.load(run)
    if out is not None:
        out = Path(out)
        check_out(out)
    snap_dir = prepare_evidence_dir(snapshots) if snapshots is not None else None
    clip_dir = prepare_evidence_dir(clips) if clips is not None else None
    if emit is None:
        emit = (lambda line: None) if out is not None else (lambda line: print(line,
                                                                              flush=True))
    cache: dict = {"device": device}
    found: list[Incident] = []
    failed: list[dict] = []
    lines: list[str] = []
    for item in map(Path, inputs):
        try:
            if item.name.endswith(SCORES_SUFFIX):
                video = _from_scores(item, detector)
            else:
                video = _from_video(item, detector, cache)
            incidents = video.incidents(config)
        except (ModelError, OutputError):  # the run or an output folder: stop everything
            raise
        except (ValueError, OSError, KeyError) as e:
            failed.append({"path": str(item), "error": str(e)})
            log.error("%s", f"{item}: {e}" if str(item) not in str(e) else e)
            continue
        checked: list[str] = []  # the source's check, made once per input when needed
        for inc in incidents:
            errors = _evidence(video, inc, snap_dir, clip_dir, checked)
            for key, why in errors.items():
                failed.append({"path": str(item), "incident": inc.id, key: why})
                log.error("%s", why)
            line = incident_line("incident", inc, video=video.video_id, **errors)
            lines.append(line)
            emit(line)
        found += incidents
    if out is not None:
        text = "".join(line + "\n" for line in lines)
        commit(out.parent, [(out, lambda t: t.write_text(text, encoding="utf-8"))], "events",
               legacy=_legacy_events_file, fix=OUT_FIX)
    return found, failed


def _evidence(video: ScoredVideo, inc: Incident, snap_dir: Path | None, clip_dir: Path | None,
              checked: list[str]) -> dict:
    """Write the snapshot and clip of ``inc``: ``{"snapshot_error" | "clip_error": why}`` for
    what could not be made (a file in the way that is not events' still stops everything)."""
    errors: dict = {}
    if snap_dir is None and clip_dir is None:
        return errors
    if not checked:
        try:
            check_source(video)
            checked.append("")
        except (StmilError, OSError) as e:
            checked.append(describe(e))
    for key, folder in (("snapshot_error", snap_dir), ("clip_error", clip_dir)):
        if folder is None:
            continue
        if checked[0]:
            errors[key] = checked[0]
            continue
        try:
            if key == "snapshot_error":
                frame = peak_frame(video.source, inc.peak_frame)
                write_snapshot(folder / snapshot_name(video.video_id, inc.id), frame, inc.box,
                               f"#{inc.id} {inc.peak_score:.2f}")
            else:
                video_clip(folder / clip_name(video.video_id, inc.id), video.source,
                           inc.start_frame, inc.end_frame, video.fps)
        except OutputError:
            raise
        except (StmilError, ValueError, OSError) as e:
            errors[key] = describe(e)
    return errors
