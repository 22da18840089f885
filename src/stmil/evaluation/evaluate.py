"""Dataset + model + features -> temporal and spatiotemporal metrics (see docs/metrics.md).

Each run keeps every evaluation in ``RUN/metrics.json``, one result per split and per dataset
root (see ``docs/formats.md``): :func:`read_metrics` is its one reader and :func:`record_metrics`
its one writer. Evaluating another split or dataset adds a result; it never replaces another's.

The metrics that count scores at or above a threshold (``false_alarm_rate``, ``tiou``,
``loc_false_positives``) are computed at the threshold :func:`metric_threshold` picks: the one
given, else the run's calibrated one (``RUN/calibration.json``), else 0.5, the papers'. Each
result records it, and where it came from, in its ``threshold`` object, with the same metrics
at 0.5 beside them when the threshold is another (docs/metrics.md, "Thresholds").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stmil import safejson
from stmil.atomic import locked
from stmil.cuboids import cuboid_boxes, cuboid_labels, frame_heatmap
from stmil.datasets import DatasetError, fit_to_video, load_dataset
from stmil.datasets.liu_ma import attach_liu_ma, read_liu_ma
from stmil.errors import ConfigError, ModelError, OutputError
from stmil.evaluation import metrics as M
from stmil.evaluation.incidents import format_incidents, run_incident_metrics
from stmil.evaluation.paper_metrics import (
    PAPER_THRESHOLD,
    THRESHOLDED,
    paper_metrics,
    thresholded_metrics,
)
from stmil.evaluation.settings import EvaluateOptions
from stmil.features.store import VideoFeatures, load_dataset_features
from stmil.live.calibrate import read_calibration
from stmil.mil.detector import Detector
from stmil.ownership import check_can_write, commit
from stmil.settings import (
    MISSING,
    SettingError,
    Settings,
    check,
    check_number,
    setting,
    specs,
)
from stmil.timeline import frame_labels, frame_scores_from_clips, frame_to_clip

log = logging.getLogger(__name__)



def _fraction(default: object = MISSING) -> Any:
    return setting(default, lo=0, hi=1, what="a number in [0, 1] or null")


@dataclass(frozen=True, kw_only=True)
class Metrics(Settings):
    """The metrics of one recorded result (``metrics.json``): fractions in [0, 1], or counts,
    null where undefined; their one declaration (:data:`METRIC_KEYS`)."""

    frame_auc: float | None = _fraction()
    frame_ap: float | None = _fraction()
    false_alarm_rate: float | None = _fraction()
    cuboid_auc: float | None = _fraction()
    pixel_auroc: float | None = _fraction()
    pointing_accuracy: float | None = _fraction()
    # The metrics papers report (issue 12, docs/metrics.md); results recorded before they
    # existed lack them (read as absent, shown as "-").
    frame_auc_anomalous: float | None = _fraction(None)
    frame_ap_trapezoid: float | None = _fraction(None)
    patch_auc: float | None = _fraction(None)
    patch_ap: float | None = _fraction(None)
    tiou: float | None = _fraction(None)
    loc_false_positives: float | None = setting(None, lo=0, hi=math.inf,
                                                what="a number >= 0 or null")


METRIC_KEYS = tuple(specs(Metrics))
#: Metric keys a recorded result may lack (added after the metrics.json format was fixed).
OPTIONAL_METRIC_KEYS = tuple(k for k, s in specs(Metrics).items() if not s.required)
#: Metrics that are counts (>= 0), not fractions in [0, 1].
UNBOUNDED_METRIC_KEYS = tuple(k for k, s in specs(Metrics).items() if s.rule.hi == math.inf)
#: Where a result's threshold came from: ``--threshold`` (given), the run's calibration, or
#: 0.5 for want of either (default).
THRESHOLD_SOURCES = ("given", "calibrated", "default")
#: The key, in a result's ``threshold`` object, of the thresholded metrics at 0.5.
AT_PAPER = "at_0.5"
METRICS_FILE = "metrics.json"
METRICS_VERSION = 2
SPLIT_ORDER = ("test", "train", "all")


def evaluate(
    data: str | Path,
    features: str | Path,
    run: str | Path,
    *,
    split: str = "test",
    format: str = "auto",
    overlap: float = 0.25,
    threshold: float | None = None,
    pixel_frames: int = 16,
    skip_missing: bool = False,
    json_out: str | Path | None = None,
    boxes: str | Path | None = None,
    interpolate: bool = False,
) -> EvaluateSummary:
    """All metrics of ``run`` on ``split``; recorded in ``run/metrics.json`` under the split
    and the dataset root (other splits and datasets are kept), and written alone to
    ``json_out`` when given.

    ``overlap`` (in (0, 1]) is the fraction of a cuboid a GT box must cover to make it
    positive. ``threshold`` is that of the :data:`THRESHOLDED` metrics; ``None`` takes the run's
    calibrated one, else 0.5 (:func:`metric_threshold`). ``pixel_frames`` caps the annotated
    frames per video used for ``pixel_auroc`` (evenly spaced). Returns an
    :class:`EvaluateSummary`.
    """
    overlap = check(EvaluateOptions, "overlap", overlap)  # before any work: a result at a
    # bad overlap is not kept
    if interpolate and boxes is None:
        raise ConfigError("--interpolate interpolates Liu and Ma's boxes: give their pickle "
                          "with --boxes, or leave --interpolate out")
    detector = Detector.load(run)
    read_metrics(run)  # refuse a metrics.json that is not ours before any work is done
    check_can_write(run, [METRICS_FILE], legacy=lambda p: True)
    threshold, source = metric_threshold(run, threshold)
    if json_out is not None:
        check_json_out(json_out, run)
    records = load_dataset(data, split, format)
    videos = load_dataset_features(records, features, skip_missing)
    if boxes is not None:  # Liu and Ma's UCF-Crime boxes (docs/formats.md)
        videos = with_liu_ma_boxes(videos, boxes, interpolate)
    detector.check_features(videos[0].meta, run)
    per_video = [detector.maps(v.features, v.motion,
                               str(Path(features) / f"{v.record.video_id}.json"))
                 for v in videos]
    result = dict(compute_metrics(videos, per_video, overlap, threshold, pixel_frames, source))
    result["incidents"] = run_incident_metrics(run, videos, per_video)  # docs/live.md
    result["settings"] = {"data": str(data), "features": str(features), "run": str(run),
                          "split": split, "overlap": overlap, "threshold": threshold,
                          "pixel_frames": pixel_frames, "n_videos": len(videos),
                          "boxes": None if boxes is None else str(boxes),
                          "interpolate": interpolate,
                          "model_grid": detector.config.grid,
                          "supervision": detector.config.supervision}
    saved = {k: v for k, v in result.items() if k != "curves"}
    record_metrics(run, saved)
    if json_out is not None:
        _write_json(Path(json_out), saved)
    return EvaluateSummary(str(run), saved, result["curves"], list(zip(videos, per_video)))


@dataclasses.dataclass(frozen=True)
class EvaluateSummary:
    """What :func:`evaluate` measured. ``result``: what ``metrics.json`` records for this
    split and dataset (every metric of :data:`METRIC_KEYS`, the ``threshold`` object,
    ``incidents`` and ``settings``), the form :func:`format_table` and :func:`compare_table`
    read; ``curves``: the frame and cuboid ``(scores, labels)`` arrays; ``videos``:
    ``(VideoFeatures, maps)`` pairs with each video's cuboid maps ``(n_clips, G*G)``."""

    run: str
    result: dict
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    videos: list[tuple[VideoFeatures, np.ndarray]]

    def table(self) -> str:
        """What ``stmil evaluate`` prints: the metrics table, its notes (which AP papers
        report; the threshold) and the incident metrics, when there are any."""
        rows = [(self.run, self.result)]
        text = format_table(rows, METRIC_KEYS, where=True) + "\n\n" + "\n".join(
            table_notes(rows))
        if self.result.get("incidents"):
            text += "\n" + format_incidents(self.result["incidents"])
        return text


def metric_threshold(run: str | Path, threshold: float | None = None) -> tuple[float, str]:
    """The threshold of the :data:`THRESHOLDED` metrics and where it came from
    (:data:`THRESHOLD_SOURCES`): ``threshold`` when given, else the run's calibrated threshold
    (``RUN/calibration.json``, read by :func:`stmil.live.calibrate.read_calibration`), else 0.5.
    """
    if threshold is not None:
        return check(EvaluateOptions, "threshold", threshold), "given"
    cal = read_calibration(run)
    if cal is not None:
        return float(cal.threshold), "calibrated"
    return PAPER_THRESHOLD, "default"


def with_liu_ma_boxes(videos: list[VideoFeatures], path: str | Path,
                      interpolate: bool = False) -> list[VideoFeatures]:
    """``videos`` with the boxes of Liu and Ma's annotation pickle at ``path``, scaled to each
    video's size and checked against it (:mod:`stmil.datasets.liu_ma`).

    A pickle that boxes none of the anomalous videos (another dataset's, or another split's)
    is a :class:`DatasetError`; anomalous videos it lacks are named in a warning.
    """
    rows = read_liu_ma(path)
    anomalous = [v.record.video_id for v in videos if v.record.label == 1]
    lacking = [vid for vid in anomalous if vid not in rows]
    if anomalous and len(lacking) == len(anomalous):
        raise DatasetError(f"{path}: boxes none of the {len(anomalous)} anomalous videos "
                           f"evaluated (such as {anomalous[0]}); pass the annotation of this "
                           "dataset and split (Liu and Ma's test_ann.pkl for UCF-Crime's test)")
    if lacking:
        log.warning("%s: no box for %d of the %d anomalous videos (%s%s); they keep the "
                    "dataset's own boxes, if any", path, len(lacking), len(anomalous),
                    ", ".join(lacking[:3]), ", ..." if len(lacking) > 3 else "")
    out = []
    for v in videos:
        w, h, n = v.meta.width, v.meta.height, v.meta.n_frames
        rec = attach_liu_ma(v.record, rows.get(v.record.video_id), w, h, n, str(path),
                            interpolate)
        out.append(dataclasses.replace(v, record=fit_to_video(rec, w, h, n)))
    return out


def dataset_key(data: str | Path) -> str:
    """How ``metrics.json`` names a dataset: its root folder, resolved."""
    return str(Path(data).resolve())


def _bad_metrics(path: Path, problem: str) -> ModelError:
    return ModelError(f"{path}: not a stmil metrics file ({problem}); move it away or delete it, "
                      "then run stmil evaluate again")


def check_result(path: Path, where: str, entry: object) -> dict:
    """Validate one evaluation result (metrics and settings); ``where`` names it in errors."""
    if not isinstance(entry, dict):
        raise _bad_metrics(path, f"{where}: expected an object, got {type(entry).__name__}")
    missing = [k for k in (*METRIC_KEYS, "settings")
               if k not in entry and k not in OPTIONAL_METRIC_KEYS]
    if missing:
        raise _bad_metrics(path, f"{where}: missing keys {', '.join(missing)}")
    try:
        Metrics.from_mapping(entry, others="ignore")
    except SettingError as e:
        raise _bad_metrics(path, f"{where}: {e}") from None
    s = entry["settings"]
    if not (isinstance(s, dict) and isinstance(s.get("split"), str)
            and isinstance(s.get("data"), str)):
        raise _bad_metrics(path, f"{where}: settings must be an object with split and data")
    if "threshold" in entry:  # absent from results recorded before it existed (at 0.5)
        _check_threshold(path, where, entry["threshold"])
    return entry


@dataclass(frozen=True, kw_only=True)
class _Threshold(Settings):
    """A result's ``threshold`` object besides its metrics at 0.5 (:data:`AT_PAPER`)."""

    value: float = setting(lo=-math.inf, hi=math.inf)
    source: str = setting(choices=THRESHOLD_SOURCES)


def _check_threshold(path: Path, where: str, block: object) -> None:
    """Validate a result's ``threshold`` object (value, source, metrics at 0.5 or null)."""
    try:
        if not isinstance(block, dict):
            raise ValueError(block)
        _Threshold.from_mapping(block, others="ignore")
        at = block.get(AT_PAPER)
        if at is not None and not isinstance(at, dict):
            raise ValueError(at)
        for k in THRESHOLDED if at is not None else ():
            if at.get(k) is not None:
                check_number(k, at[k], float, lo=0)
    except ValueError:  # a SettingError too
        raise _bad_metrics(path, f"{where}: threshold must be an object with a number value, "
                           f"a source ({', '.join(THRESHOLD_SOURCES)}) and {AT_PAPER} "
                           "(numbers or null)") from None


def _load_json(path: Path) -> object:
    try:
        return safejson.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise _bad_metrics(path, f"not UTF-8 text at byte {e.start}") from e
    except json.JSONDecodeError as e:
        raise _bad_metrics(path, f"invalid JSON at line {e.lineno} column {e.colno}") from e
    except ValueError as e:  # safejson's: nested too deeply
        raise _bad_metrics(path, str(e)) from None


def read_metrics(run: str | Path) -> dict[str, dict[str, dict]]:
    """Every evaluation recorded in ``run/metrics.json``: split -> dataset root -> result.

    An absent file gives ``{}``. A file of the first format (one flat result) is read as that
    one result. Anything else raises :class:`ModelError` naming the file.
    """
    path = Path(run) / METRICS_FILE
    if not path.exists():
        return {}
    if not path.is_file():
        raise _bad_metrics(path, "not a file")
    data = _load_json(path)
    if isinstance(data, dict) and "settings" in data and "results" not in data:
        entry = check_result(path, "result", data)  # first format: one flat result
        return {entry["settings"]["split"]: {dataset_key(entry["settings"]["data"]): entry}}
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        got = type(data).__name__ if not isinstance(data, dict) else "no 'results' object"
        raise _bad_metrics(path, f"expected an object with 'version' and 'results', got {got}")
    if data.get("version") != METRICS_VERSION:
        raise _bad_metrics(path, f"version {data.get('version')!r}, expected {METRICS_VERSION}")
    out: dict[str, dict[str, dict]] = {}
    for split, by_data in data["results"].items():
        if not isinstance(by_data, dict):
            raise _bad_metrics(path, f"results.{split}: expected an object keyed by dataset root")
        out[split] = {root: check_result(path, f"results.{split}[{root!r}]", entry)
                      for root, entry in by_data.items()}
    return out


def record_metrics(run: str | Path, result: dict) -> Path:
    """Add ``result`` to ``run/metrics.json`` under its split and dataset root, atomically.

    The result of the same split and dataset is replaced; all others are kept.
    """
    run = Path(run)
    path = run / METRICS_FILE
    check_result(path, "new result", result)
    with locked(run):
        results = read_metrics(run)
        split = result["settings"]["split"]
        results.setdefault(split, {})[dataset_key(result["settings"]["data"])] = result
        text = json.dumps({"version": METRICS_VERSION, "results": results}, indent=1,
                          allow_nan=False)
        commit(run, [(path, lambda t: t.write_text(text, encoding="utf-8"))], "evaluate",
               legacy=lambda p: True)  # a run from before ledgers: read_metrics read it
    return path


def check_json_out(json_out: str | Path, run: str | Path) -> None:
    """Refuse a ``--json`` path that cannot be written or holds something not ours."""
    dest = Path(json_out)
    if dest.resolve() == (Path(run) / METRICS_FILE).resolve():
        raise OutputError(f"{dest}: is the run's own {METRICS_FILE}; give --json another path")
    if dest.is_dir():
        raise OutputError(f"{dest}: is a folder; give --json a file path like {dest / 'm.json'}")
    if not dest.parent.is_dir():
        raise OutputError(f"{dest}: folder {dest.parent} does not exist; create it first")
    check_can_write(dest.parent, [dest.name], _legacy_result, JSON_FIX)


JSON_FIX = "refusing to overwrite it (give --json another path)"


def _legacy_result(path: Path) -> bool:
    """In a folder from before ledgers (the old test): a ``--json`` file holding an
    evaluation result is ours; anything else is refused naming it."""
    try:
        check_result(path, "result", _load_json(path))
    except ModelError as e:
        raise OutputError(f"{path}: exists and is not a stmil evaluation result; "
                          f"{JSON_FIX}") from e
    return True


def _write_json(dest: Path, obj: object) -> None:
    """Atomically write ``obj`` as JSON (NaN refused), recorded in its folder's ledger; an
    error names ``dest``, never a temp."""
    text = json.dumps(obj, indent=1, allow_nan=False)
    try:
        commit(dest.parent, [(dest, lambda t: t.write_text(text, encoding="utf-8"))],
               "evaluate", _legacy_result, JSON_FIX)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(dest)) from e


def compute_metrics(videos: Sequence[VideoFeatures], maps: Sequence[np.ndarray],
                    overlap: float = 0.25, threshold: float | None = None,
                    pixel_frames: int = 16, source: str | None = None) -> dict:
    """Every metric of :data:`METRIC_KEYS` from per-video cuboid maps ``(n_clips, G*G)``.

    The :data:`THRESHOLDED` metrics count scores ``>= threshold`` (``None``: 0.5). The result's
    ``threshold`` object records it and ``source`` (:data:`THRESHOLD_SOURCES`; by default
    ``"given"`` for a threshold, ``"default"`` for ``None``), and, when it is not 0.5, the
    same metrics at 0.5 under :data:`AT_PAPER` (else ``None``).
    """
    if source is None:
        source = "default" if threshold is None else "given"
    threshold = PAPER_THRESHOLD if threshold is None else float(threshold)
    f_scores, f_labels, normal_scores = [], [], []
    c_scores, c_labels = [], []
    heatmaps, masks, top_boxes, gt_frames = [], [], [], []
    rng = np.random.default_rng(0)  # ties of the top cuboid are broken at random, reproducibly
    for v, m in zip(videos, maps):
        n, ranges = v.meta.n_frames, v.clip_ranges
        fs = frame_scores_from_clips(m.max(axis=1), ranges, n)
        f_scores.append(fs)
        f_labels.append(frame_labels(list(v.record.intervals), n))
        if v.record.label == 0:
            normal_scores.append(fs)
        boxes = cuboid_boxes(v.meta.width, v.meta.height, v.meta.grid)
        if v.record.label == 0:
            c_scores.append(m.ravel())
            c_labels.append(np.zeros(m.size, dtype=bool))
            continue
        if not v.record.has_boxes:
            continue  # anomalous video without boxes: temporal metrics only
        gt = v.record.boxes
        for k, (s, e) in enumerate(ranges):
            c_scores.append(m[k])
            c_labels.append(cuboid_labels(boxes, [np.array(gt.get(f, []), float).reshape(-1, 4)
                                                  for f in range(s, e)], overlap))
        frames = np.array(sorted(f for f in gt if 0 <= f < n and len(gt[f])), dtype=int)
        clip_of = frame_to_clip(ranges, n)
        tops = M.top_cuboid_boxes(m[clip_of[frames]], boxes, rng)
        top_boxes.append(tops)
        gt_frames += [np.array(gt[f], float).reshape(-1, 4) for f in frames]
        pick = frames[np.linspace(0, len(frames) - 1, min(pixel_frames, len(frames))).astype(int)]
        w, h = v.meta.width, v.meta.height
        heatmaps += [frame_heatmap(m[clip_of[f]], w, h) for f in pick]
        masks += [M.box_mask(np.array(gt[f], float).reshape(-1, 4), w, h) for f in pick]
    frame_classes = np.unique(np.concatenate(f_labels)) if f_labels else []
    if len(frame_classes) < 2:
        kind = "anomalous" if len(frame_classes) and frame_classes[0] else "normal"
        log.warning("the test set's frames are all %s: frame AUC and AP are undefined and "
                    "recorded as null (a split needs anomalous and normal frames)", kind)
    out = {
        "frame_auc": _maybe(M.frame_auc, f_scores, f_labels),
        "frame_ap": _maybe(M.frame_ap, f_scores, f_labels),
        "false_alarm_rate": M.false_alarm_rate(normal_scores, threshold) if normal_scores
        else None,
        "cuboid_auc": _maybe(M.cuboid_auc, c_scores, c_labels),
        "pixel_auroc": _maybe(M.pixel_auroc, heatmaps, masks),
        "pointing_accuracy": M.pointing_accuracy(np.concatenate(top_boxes), gt_frames)
        if top_boxes else None,
    }
    out.update(paper_metrics(videos, maps, f_scores, f_labels, overlap, threshold))
    out["threshold"] = {
        "value": threshold, "source": source, "metrics": list(THRESHOLDED),
        AT_PAPER: None if threshold == PAPER_THRESHOLD
        else thresholded_metrics(videos, maps, f_scores, PAPER_THRESHOLD)}
    out["curves"] = {"frame": (np.concatenate(f_scores), np.concatenate(f_labels)),
                     "cuboid": (np.concatenate(c_scores), np.concatenate(c_labels))
                     if c_scores else None}
    return out


def _maybe(fn, scores, labels) -> float | None:
    """A metric, or None where the test set has no positives/negatives for it."""
    if not scores or len(np.unique(np.concatenate([np.ravel(x) for x in labels]))) < 2:
        return None
    return fn(scores, labels)


def compare_table(runs: Sequence[str | Path], keys: Sequence[str] = METRIC_KEYS,
                  notes: bool = False) -> str:
    """One text table across runs: a row per evaluation in each ``run/metrics.json``, with its
    split and dataset (``notes``: and :func:`table_notes` below it, after an empty line)."""
    rows = []
    for run in runs:
        results = read_metrics(run)
        if not results:
            raise ModelError(f"{run}: no {METRICS_FILE} (run stmil evaluate first)")
        splits = sorted(results, key=lambda s: (SPLIT_ORDER + (s,)).index(s))
        rows += [(str(run), results[split][root]) for split in splits
                 for root in sorted(results[split])]
    table = format_table(rows, keys, where=True)
    lines = table_notes(rows, keys) if notes else []
    return "\n\n".join([table, "\n".join(lines)]) if lines else table


def _shown_path(path: str) -> str:
    """A path relative to the working folder when it lies below it, else as given."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def threshold_of(result: dict) -> tuple[float, str]:
    """The threshold of a result's :data:`THRESHOLDED` metrics and its source. A result
    recorded before thresholds had a source used ``settings.threshold`` (0.5 unless a caller
    of :func:`evaluate` passed another)."""
    block = result.get("threshold")
    if isinstance(block, dict):
        return float(block["value"]), str(block["source"])
    value = float((result.get("settings") or {}).get("threshold", PAPER_THRESHOLD))
    return value, "default" if value == PAPER_THRESHOLD else "given"


def at_paper_threshold(result: dict) -> dict[str, float | None]:
    """A result's :data:`THRESHOLDED` metrics at 0.5, the papers' threshold: its own values
    when it was evaluated at 0.5, else those its ``threshold`` object keeps under
    :data:`AT_PAPER`."""
    value, _ = threshold_of(result)
    at = (result.get("threshold") or {}).get(AT_PAPER)
    if value != PAPER_THRESHOLD and at is not None:
        return {k: at.get(k) for k in THRESHOLDED}
    if value != PAPER_THRESHOLD:
        raise ValueError(f"result evaluated at threshold {value:g} has no metrics at 0.5")
    return {k: result.get(k) for k in THRESHOLDED}


def _threshold_label(value: float, source: str) -> str:
    """``0.31(calibrated)``: a threshold and its source, without spaces (a table cell)."""
    return f"{value:.4g}({source})"


def format_table(rows: Sequence[tuple[str, dict]], keys: Sequence[str] = METRIC_KEYS,
                 where: bool = False) -> str:
    """Rows of metric dicts as an aligned text table (``-`` for a missing value).

    ``where`` adds the split and the dataset of each row (from its ``settings``). The columns
    of :data:`THRESHOLDED` metrics name their threshold and its source, ``tiou@0.31(calibrated)``,
    when every row shares it; otherwise they read ``tiou@threshold`` and a ``threshold`` column
    gives each row's.
    """
    names = [n for n, _ in rows]
    extra: list[list[str]] = [[] for _ in rows]
    heads = ["run"]
    if where:
        heads += ["split", "data"]
        for cells, (_, m) in zip(extra, rows):
            s = m.get("settings", {})
            cells += [str(s.get("split", "-")), _shown_path(str(s.get("data", "-")))]
    labels = [_threshold_label(*threshold_of(m)) for _, m in rows]
    shared = labels[0] if len(set(labels)) == 1 else None
    if shared is None and any(k in THRESHOLDED for k in keys):
        heads.append("threshold")
        for cells, label in zip(extra, labels):
            cells.append(label)
    cols = [names, *zip(*extra)]
    widths = [max([len(h)] + [len(c) for c in col]) for h, col in zip(heads, cols)]
    titles = [f"{k}@{shared or 'threshold'}" if k in THRESHOLDED else k for k in keys]
    key_widths = [max(17, len(h)) for h in titles]
    head = "  ".join(h.ljust(w) for h, w in zip(heads, widths)) + "".join(
        f"  {h:>{w}}" for h, w in zip(titles, key_widths))
    lines = [head, "-" * len(head)]
    for i, (name, m) in enumerate(rows):
        left = "  ".join(c.ljust(w) for c, w in zip([name, *extra[i]], widths))
        lines.append(left + "".join(f"  {_fmt(m.get(k)):>{w}}" for k, w in zip(keys, key_widths)))
    return "\n".join(lines)


#: What each threshold source means, for the notes under a table.
_SOURCE_NOTES = {"calibrated": "calibrated: the run's calibration.json, from stmil calibrate",
                 "given": "given: --threshold",
                 "default": "default: 0.5, the papers' threshold, as the run has no "
                            "calibration.json"}


def table_notes(rows: Sequence[tuple[str, dict]], keys: Sequence[str] = METRIC_KEYS
                ) -> list[str]:
    """The lines printed under a table of ``rows``: which AP papers report, what the
    thresholds are, and each row's thresholded metrics at 0.5 where it used another."""
    lines = []
    if "frame_ap_trapezoid" in keys:
        lines.append("frame_ap_trapezoid is the AP papers report (sklearn.metrics.auc over "
                     "precision_recall_curve, as RTFM and UR-DMU compute it); frame_ap is "
                     "average_precision_score (docs/metrics.md)")
    shown = [k for k in THRESHOLDED if k in keys]
    if not shown:
        return lines
    sources = dict.fromkeys(threshold_of(m)[1] for _, m in rows)
    lines.append(f"{', '.join(shown)} count scores >= the threshold shown ("
                 + "; ".join(_SOURCE_NOTES[s] for s in sources if s in _SOURCE_NOTES) + ")")
    for name, m in rows:
        if threshold_of(m)[0] == PAPER_THRESHOLD:
            continue
        try:
            at = at_paper_threshold(m)
        except ValueError:
            continue
        lines.append(f"{name} at 0.5, the papers' threshold: "
                     + ", ".join(f"{k} {_fmt(at[k])}" for k in shown))
    return lines


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:.4f}"
