"""``stmil calibrate``: the incident threshold that a target false-incident rate asks for.

Every incident on a normal video is a false one. For each candidate threshold (the distinct
clip scores of the normal videos, with the incident rules of
:class:`~stmil.live.incidents.EventConfig`), count the incidents over the normal videos of the
run's **validation split** (re-carved exactly as training carved it, from the run's seed and
``val_fraction``), or of the whole **train split** when the run has no validation split; the
test split is never used. The threshold is the lowest one at which this and every higher
candidate stay at or under ``target`` incidents per hour, placed midway between that
candidate score and the next lower one (so a clip scoring exactly a normal video's score is
not an edge case); above every normal score it is midway to 1.

That rate is only measurable on at least one target period of normal video (1 h for 1 false
incident per hour). On less (the demo's validation split holds 16 s), any threshold without a
false incident meets it, and the rule above would put the threshold midway to 1, far above
what anomalies score. There, calibrate says so in one warning line and uses the **margin**
rule, from the same split and video-level labels only: the threshold is midway between the
zero-false bound (the highest candidate that still gives a normal video an incident; 0 when
none does) and the firing level of the split's anomalous videos (the lowest, over those
videos, of the highest threshold at which each still gives an incident). When the two
overlap (some anomalous video cannot fire without a false incident), the rate rule's
threshold is kept, and the calibration records how many anomalous videos fire at it.

``RUN/calibration.json`` (:func:`write_calibration`, its one writer; :func:`read_calibration`,
its one reader) holds the threshold, the incident settings it was chosen with, the split, the
hours of normal video and the curve of incidents per hour against the threshold.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stmil import __version__, safejson
from stmil.cuboids import cuboid_boxes
from stmil.datasets import load_dataset
from stmil.errors import ConfigError, ModelError
from stmil.features.store import load_dataset_features
from stmil.live.incidents import EventConfig, clips_from_maps, find_incidents
from stmil.live.settings import CalibrateOptions
from stmil.ownership import check_can_write, commit
from stmil.settings import MISSING, Settings, check, require, setting, setting_like

log = logging.getLogger(__name__)

CALIBRATION = "calibration.json"
FORMAT = "stmil-calibration"
CURVE_POINTS = 200


@dataclass(frozen=True, kw_only=True)
class Calibration(Settings):
    """The contents of ``RUN/calibration.json``, checked when made (:mod:`stmil.settings`);
    ``events`` (its own settings, checked when made) and ``curve`` are records beside them."""

    threshold: float = setting_like(EventConfig, "threshold", MISSING)
    events: EventConfig
    target_per_hour: float = setting_like(CalibrateOptions, "target", MISSING)
    split: str = setting(choices=("validation", "train"))
    n_videos: int = setting(lo=0, hi=math.inf)
    normal_hours: float = setting(lo=0, hi=math.inf)
    false_incidents: int = setting(lo=0, hi=math.inf)
    per_hour: float = setting(lo=0, hi=math.inf)
    curve: list[tuple[float, float]]  # (threshold, false incidents per hour), ascending
    data: str = setting()
    features: str = setting()
    # "rate" (the target rate) or "margin" (a short split; module docstring)
    rule: str = setting("rate", choices=("rate", "margin"))
    n_anomalous: int = setting(0, lo=0, hi=math.inf)  # anomalous videos of the split
    # of them, those with an incident at the threshold
    anomalous_fired: int = setting(0, lo=0, hi=math.inf)

    def rules(self) -> None:
        require(self.events.threshold == self.threshold,
                f"{{threshold}} must equal events.threshold ({self.events.threshold:g}), "
                f"got {self.threshold:g}", "threshold")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["events"] = asdict(self.events)
        d["curve"] = [list(p) for p in self.curve]
        return {"format": FORMAT, "version": 1, "stmil_version": __version__, **d}


def read_calibration(run: str | Path) -> Calibration | None:
    """The calibration of a run folder, or None when it has none; :class:`ModelError` naming
    the file when it is not a stmil calibration."""
    path = Path(run) / CALIBRATION
    if not path.exists():
        return None
    fix = f"move it away (stmil replaces only its own calibration), then run stmil calibrate {run}"
    try:
        d = safejson.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        if not isinstance(d.get("events"), dict):
            raise ValueError("events is not a mapping")
        curve = [tuple(p) for p in d["curve"]]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not a stmil calibration ({' '.join(str(e).split())}); "
                         f"{fix}") from None
    events = EventConfig.from_mapping(d["events"], f"{path}: events", fix=fix,
                                      error=ModelError, others="ignore")
    return Calibration.from_mapping(d | {"events": events, "curve": curve}, path, fix=fix,
                                    error=ModelError, others="ignore")


def write_calibration(run: str | Path, cal: Calibration) -> Path:
    """Atomically write ``RUN/calibration.json``; refuses a run folder that is not a finished
    stmil run, or a calibration.json that is not ours."""
    run = Path(run)
    check_finished_run(run)
    read_calibration(run)  # a file there that is not ours is refused, never replaced
    text = json.dumps(cal.to_dict(), indent=1, allow_nan=False)
    commit(run, [(run / CALIBRATION, lambda t: t.write_text(text, encoding="utf-8"))],
           "calibrate", legacy=_format_checked)
    return run / CALIBRATION


def _format_checked(path: Path) -> bool:
    """In a run from before ledgers, a calibration.json that :func:`read_calibration` read."""
    return True


def check_finished_run(run: Path) -> None:
    """:class:`ModelError` unless ``run`` is a finished stmil run folder (marker, config and
    model, as ``stmil train`` commits them)."""
    from stmil.mil.run import MARKER, MODEL  # deferred: torch; events reads calibrations

    missing = [n for n in (MARKER, "config.yaml", MODEL) if not (run / n).is_file()]
    if not run.is_dir() or missing:
        raise ModelError(f"{run}: not a finished stmil run folder (no {', '.join(missing)}); "
                         "train it with stmil train first")


def false_incident_curve(videos: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]],
                         settings: EventConfig) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds (ascending distinct clip scores) and the false incidents each
    gives over ``videos``: ``(maps (n_clips, G*G), clip_ranges, fps, cuboid boxes)`` each."""
    scores = np.unique(np.concatenate([m.max(axis=1) for m, _, _, _ in videos]))
    if len(scores) > 4 * CURVE_POINTS:  # long inputs: quantiles are enough for a rate
        scores = np.unique(np.quantile(scores, np.linspace(0, 1, 4 * CURVE_POINTS)))
    counts = np.zeros(len(scores), dtype=int)
    for i, t in enumerate(scores):
        cfg = EventConfig(float(t), settings.hysteresis, settings.min_duration,
                          settings.merge_gap)
        counts[i] = sum(len(find_incidents(clips_from_maps(m, r, b, cfg.threshold), cfg, fps))
                        for m, r, fps, b in videos)
    return scores, counts


def choose_threshold(scores: np.ndarray, counts: np.ndarray, allowed: float) -> float:
    """The lowest threshold such that it and every higher candidate give at most ``allowed``
    incidents (see the module docstring for where between candidates it is placed)."""
    ok = counts <= allowed
    i = len(scores)
    while i > 0 and ok[i - 1]:
        i -= 1
    lower = scores[i - 1] if i > 0 else 0.0
    upper = scores[i] if i < len(scores) else 1.0
    return float((lower + upper) / 2)


def firing_level(video: tuple[np.ndarray, np.ndarray, float, np.ndarray],
                 settings: EventConfig) -> float:
    """The highest of a video's clip scores at which it still gives an incident (0 if none
    does): ``(maps (n_clips, G*G), clip_ranges, fps, cuboid boxes)``."""
    maps, ranges, fps, boxes = video
    for t in np.unique(maps.max(axis=1))[::-1]:  # an incident at t is one at every lower t
        cfg = EventConfig(float(t), settings.hysteresis, settings.min_duration,
                          settings.merge_gap)
        if find_incidents(clips_from_maps(maps, ranges, boxes, cfg.threshold), cfg, fps):
            return float(t)
    return 0.0


def margin_threshold(scores: np.ndarray, counts: np.ndarray, fire: float) -> float | None:
    """Midway between the zero-false bound of the normal curve (``scores``, ``counts``) and
    the anomalous videos' firing level ``fire``; None when they overlap."""
    bad = np.nonzero(counts > 0)[0]
    bound = float(scores[bad[-1]]) if len(bad) else 0.0
    return (bound + fire) / 2 if fire > bound else None


def _videos(chosen, detector) -> tuple[list, float]:
    """``(maps, clip_ranges, fps, boxes)`` of each feature video, and their total seconds."""
    inputs, seconds = [], 0.0
    for v in chosen:
        fps = float(v.meta.source_fps)
        boxes = cuboid_boxes(v.meta.width, v.meta.height, v.meta.grid)
        maps = detector.maps(v.features, v.motion, f"features of {v.record.video_id}")
        inputs.append((maps, v.clip_ranges, fps, boxes))
        seconds += v.meta.n_frames / fps
    return inputs, seconds


def calibrate(run: str | Path, data: str | Path, features: str | Path, *,
              target: float = 1.0, settings: EventConfig | None = None) -> Calibration:
    """Choose and store (``RUN/calibration.json``) the threshold for ``target`` false incidents
    per hour of normal video; returns the calibration written."""
    # deferred: torch and scikit-learn, for calibrating only; reading a calibration needs neither
    from stmil.mil.detector import Detector
    from stmil.mil.train import _carve_validation

    target = check(CalibrateOptions, "target", target)
    settings = settings or EventConfig()
    run = Path(run)
    check_finished_run(run)
    read_calibration(run)
    check_can_write(run, [CALIBRATION], legacy=_format_checked)  # before any work
    detector = Detector.load(run)
    config = detector.config.recorded  # how it was trained: the same split is carved
    records = load_dataset(data, "train", config.get("format", "auto"))
    videos = load_dataset_features(  # calibrate has no --skip-missing: the run's setting
        records, features, bool(config.get("skip_missing")),
        missing_fix="extract them: calibrate reads the videos the run was trained on")
    detector.check_features(videos[0].meta, run)
    if detector.config.supervision == "boxes":  # as training filtered them before carving
        videos = [v for v in videos if v.record.label == 0 or v.record.has_boxes]
    labels = np.array([v.record.label for v in videos])
    val = _carve_validation(labels, float(config.get("val_fraction", 0.0)),
                            np.random.default_rng(int(config.get("seed", 0))))
    split = "validation" if (val & (labels == 0)).any() else "train"
    in_split = val if split == "validation" else np.ones(len(videos), dtype=bool)
    chosen = [v for v, keep in zip(videos, in_split) if keep and v.record.label == 0]
    anomalous = [v for v, keep in zip(videos, in_split) if keep and v.record.label == 1]
    if not chosen:
        raise ConfigError(f"{data}: no normal videos in the train split to calibrate on")
    if split == "train":
        log.warning(f"{run}: no validation split (val_fraction {config.get('val_fraction', 0.0)}); "
                 "calibrating on the normal train videos, which the model has seen")
    inputs, seconds = _videos(chosen, detector)
    anom_inputs, _ = _videos(anomalous, detector)
    hours = seconds / 3600
    scores, counts = false_incident_curve(inputs, settings)
    threshold, rule = choose_threshold(scores, counts, target * hours), "rate"
    if 0 < target * hours < 1 and anom_inputs:
        fire = min(firing_level(a, settings) for a in anom_inputs)
        margin = margin_threshold(scores, counts, fire)
        how = (f"threshold midway between the top normal score with a false incident and the "
               f"level at which every anomalous {split} video fires" if margin is not None
               else f"no threshold separates normal and anomalous {split} videos (one fires "
               "only with false incidents), so the rate rule's threshold is kept")
        log.warning(f"{run}: the {split} split holds {seconds:.0f} s of normal video, far "
                    f"less than the {1 / target:g} h that a target of {target:g} false "
                    f"incidents per hour needs; {how} (docs/live.md)")
        if margin is not None:
            threshold, rule = margin, "margin"
    final = EventConfig(threshold, settings.hysteresis, settings.min_duration,
                        settings.merge_gap)
    n_false = sum(len(find_incidents(clips_from_maps(m, r, b, threshold), final, fps))
                  for m, r, fps, b in inputs)
    pick = np.unique(np.linspace(0, len(scores) - 1, min(CURVE_POINTS, len(scores))).astype(int))
    cal = Calibration(
        threshold=round(threshold, 6), events=EventConfig(round(threshold, 6),
                                                         settings.hysteresis,
                                                         settings.min_duration,
                                                         settings.merge_gap),
        target_per_hour=float(target), split=split, n_videos=len(chosen),
        normal_hours=hours, false_incidents=int(n_false),
        per_hour=round(n_false / hours, 6),
        curve=[(round(float(scores[i]), 6), round(counts[i] / hours, 6)) for i in pick],
        data=str(data), features=str(features), rule=rule, n_anomalous=len(anom_inputs),
        anomalous_fired=sum(bool(find_incidents(clips_from_maps(m, r, b, final.threshold),
                                                final, fps)) for m, r, fps, b in anom_inputs))
    write_calibration(run, cal)
    return cal
