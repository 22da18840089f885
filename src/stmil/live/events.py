"""``stmil events``: incidents of videos or ``<id>.scores.json`` files, as JSON lines.

A video is scored on the way with the run's model and clip settings (as ``stmil score``
would); a scores file is read with :func:`stmil.score.read_scores`. The threshold comes from
the run's ``calibration.json`` unless one is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stmil.atomic import write_text
from stmil.cuboids import cuboid_boxes
from stmil.errors import ConfigError, ModelError, OutputError
from stmil.features.store import meta_clip_ranges, meta_motion
from stmil.live.calibrate import read_calibration
from stmil.live.clip import clip_name, prepare_clips_dir, video_clip
from stmil.live.incidents import (
    EventConfig,
    Incident,
    clips_from_maps,
    find_incidents,
    incident_line,
    is_incidents_file,
)
from stmil.live.snapshot import snapshot_name, write_snapshot

log = logging.getLogger(__name__)

SCORES_SUFFIX = ".scores.json"


def resolve_events(run: str | Path, threshold: float | None = None,
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
    ``(n_clips, 2)`` (source frames), with the video's frame rate, size and grid."""

    video_id: str
    source: str
    maps: np.ndarray
    clip_ranges: np.ndarray
    fps: float
    width: int
    height: int
    grid: int

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
                       int(s["height"]), int(s["grid"]))


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
                       meta_clip_ranges(meta), float(meta["source_fps"]), meta["width"],
                       meta["height"], meta["grid"])


def peak_frame(source: str, index: int) -> np.ndarray:
    """Frame ``index`` ``(H, W, 3)`` uint8 RGB of a video, decoded with PyAV."""
    from stmil.features.video import iter_frames  # deferred: torch

    for k, frame in enumerate(iter_frames(source)):
        if k == index:
            return frame
    raise ConfigError(f"{source}: has no frame {index}")


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that holds something other than stmil incident lines."""
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give --out a file path like "
                          f"{out / 'incidents.jsonl'}")
    if out.exists() and not is_incidents_file(out):
        raise OutputError(f"{out}: exists and is not a stmil incidents file; refusing to "
                          "overwrite it (give --out another path)")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist; create it first")


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
    ``out`` they are also written there at the end, as one file, atomically. ``snapshots``: a
    folder for one JPEG per incident, ``clips``: for one MP4 per incident
    (:mod:`stmil.live.clip`). One failed input
    never stops the rest; a model that cannot score, or an output file in the way that is not
    stmil's, stops the whole call.
    """
    from stmil.mil.detector import Detector  # deferred: torch

    detector = Detector.load(run)
    if out is not None:
        out = Path(out)
        check_out(out)
    snap_dir = Path(snapshots) if snapshots is not None else None
    if snap_dir is not None:
        snap_dir.mkdir(parents=True, exist_ok=True)
    clip_dir = prepare_clips_dir(clips) if clips is not None else None
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
            for inc in incidents:
                if snap_dir is not None:
                    frame = peak_frame(video.source, inc.peak_frame)
                    write_snapshot(snap_dir / snapshot_name(video.video_id, inc.id), frame,
                                   inc.box, f"#{inc.id} {inc.peak_score:.2f}")
                if clip_dir is not None:
                    video_clip(clip_dir / clip_name(video.video_id, inc.id), video.source,
                               inc.start_frame, inc.end_frame, video.fps)
                line = incident_line("incident", inc, video=video.video_id)
                lines.append(line)
                emit(line)
            found += incidents
        except (ModelError, OutputError):  # the run or an output folder: stop everything
            raise
        except (ValueError, OSError, KeyError) as e:
            failed.append({"path": str(item), "error": str(e)})
            log.error("%s", f"{item}: {e}" if str(item) not in str(e) else e)
    if out is not None:
        write_text(out, "".join(line + "\n" for line in lines))
    return found, failed
