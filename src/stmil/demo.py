"""The main job: synth -> extract -> train four runs -> evaluate -> overlays -> report.

The four runs are the default detector (weak cuboid MIL with ``train``'s defaults: top-k loss,
the normal-memory gate and the motion gate), the paper's method (``--method paper``: Sultani's
loss, ungated), the video-segment baseline (grid 1, Sultani's setting) and the boxes-supervised
reference (an upper bound). Model selection uses a validation split carved from train; the
test split is only evaluated.

The output folder is the demo's own: ``demo.json`` (written first) marks it and records the
dataset settings, the videos whose features the demo extracts and a SHA-256 of each run it
trained (of its ``model.safetensors``). What is the demo's is decided by the ledgers
(:mod:`stmil.ownership`): ``OUT``'s names ``demo.json`` and ``report.html``; ``data/``'s,
``features/``'s and each run's are those of synth, extract and train, and a run the demo
trained says ``demo`` (a user's ``stmil train`` there says ``train``). The demo refuses a
non-empty folder without its marker, and a ``runs/<run>`` of one of its run names that it
cannot prove its own (a user's training there, or changed since). A folder from before ledgers
is judged by the old test (the marker's videos and run digests).

The demo has no ``--overwrite``, and needs none: on a rerun (other settings, or the folder
moved or copied elsewhere) it replaces exactly what its ledgers prove it wrote (its dataset
through :func:`stmil.synth.dataset.make_dataset`, the feature files its marker lists, features
made from another copy of its videos, its run folders through training, its report) and
refuses anything else in one line; nothing else in the folder is touched. Its layout::

    OUT/demo.json  OUT/data/  OUT/features/  OUT/runs/<run>/
    OUT/report.html + OUT/report-XXXXXXXX/  (figures, overlays, metrics.json: one unit)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stmil import safejson
from stmil.atomic import TEMP_PATTERN, check_writable, remove_stale_temps
from stmil.datasets.layout import VIDEOS_DIR
from stmil.errors import OutputError, StmilError
from stmil.evaluation.evaluate import EvaluateSummary, evaluate, format_table
from stmil.evaluation.report import write_report
from stmil.features.extract import ExtractSettings, FeatureExtractor, extract_many
from stmil.features.store import FeatureError, read_feature_meta, source_mismatch
from stmil.mil.run import read_run_config
from stmil.mil.train import train
from stmil.options import DEMO_ITERATIONS, DemoSettings
from stmil.ownership import LEDGER_DIR, Ledger, check_can_write, commit, prune
from stmil.score import scores_from_maps

log = logging.getLogger(__name__)

DEMO_TABLE_KEYS = ("frame_auc", "frame_ap", "cuboid_auc", "pixel_auroc", "pointing_accuracy")
RUNS = {
    "weak-cuboid-mil": {},
    "paper": {"method": "paper"},
    "grid1-baseline": {"method": "paper", "instances": "frame"},
    "boxes-supervised": {"supervision": "boxes"},
}
MARKER = "demo.json"
MARKER_FORMAT = "stmil-demo"
COMMAND = "demo"
REPORT = "report.html"


def check_demo_settings(n_videos: int, n_frames: int, seed: int, iterations: int,
                        val_fraction: float = 0.25, n_overlays: int = 4) -> None:
    """Raise :class:`ConfigError` for settings :func:`run_demo` cannot use; nothing is written."""
    DemoSettings(n_videos=n_videos, n_frames=n_frames, seed=seed, iterations=iterations,
                 val_fraction=val_fraction, n_overlays=n_overlays)


def read_marker(out: Path) -> dict | None:
    """``OUT/demo.json`` when ``out`` is a demo output (``format``, ``settings``, ``videos``,
    ``runs``: run name -> SHA-256 of its model, ``training``: the run being trained or None),
    else None (no marker, not JSON, or the wrong shape). A marker of an older stmil has no
    ``runs``: it reads as having trained none."""
    try:
        meta = safejson.loads((Path(out) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(meta, dict) and meta.get("format") == MARKER_FORMAT
            and isinstance(meta.get("settings"), dict) and isinstance(meta.get("videos"), list)
            and all(isinstance(v, str) and v and "/" not in v and "\\" not in v
                    and not v.startswith(".") for v in meta["videos"])):
        return None
    meta.setdefault("runs", {})
    meta.setdefault("training", None)
    runs, training = meta["runs"], meta["training"]
    if not (isinstance(runs, dict) and all(k in RUNS and isinstance(h, str)
                                           for k, h in runs.items())
            and (training is None or training in RUNS)):
        return None
    return meta


def _claim(out: Path) -> dict | None:
    """Make ``out`` the demo's folder, or refuse; returns the previous marker (None if new)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another --out")
    old = None
    # a kill before the first marker can leave only temporaries of the probe or the marker
    # (and the ledger, renamed before the marker)
    if out.is_dir() and any(not _own_temp(e.name) and e.name != LEDGER_DIR
                            for e in out.iterdir()):
        old = read_marker(out)
        if old is not None and not Ledger.load(out).owns(MARKER, lambda p: True):
            old = None  # a demo.json stmil did not write there, or one changed since
        if old is None:
            raise OutputError(f"{out}: folder is not empty and is not a stmil demo output (no "
                              f"valid {MARKER}); choose another --out or empty it")
    check_writable(out)
    check_can_write(out, [REPORT], _legacy_ours(old))  # before any work
    if old is None:
        _write_marker(out, None, [])
    remove_stale_temps(out)
    for stale in out.glob(".overlays-*.tmp"):  # overlays of a killed demo
        shutil.rmtree(stale, ignore_errors=True)
    return old


def _legacy_ours(old: dict | None):
    """The test of a demo folder from before ledgers: with a valid marker, the demo's report
    is its own; in a new folder nothing is."""
    return lambda path: old is not None


def _own_temp(name: str) -> bool:
    """``name`` is a temporary of the writability probe or of ``demo.json`` (stmil.atomic)."""
    m = TEMP_PATTERN.fullmatch(name)
    return bool(m) and m["name"] in ("writable", MARKER)


def _write_marker(out: Path, settings: dict | None, videos: list[str],
                  runs: dict[str, str] | None = None, training: str | None = None) -> None:
    text = json.dumps({"format": MARKER_FORMAT, "settings": settings or {},
                       "videos": sorted(videos), "runs": runs or {}, "training": training},
                      indent=1) + "\n"
    commit(out, [(out / MARKER, lambda t: t.write_text(text, encoding="utf-8"))], COMMAND,
           lambda p: True)  # checked by _claim: a marker from before ledgers is the demo's


def _model_digest(run: Path) -> str | None:
    """SHA-256 of ``run/model.safetensors`` (None when it cannot be read)."""
    try:
        return hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    except OSError:
        return None


def _check_runs(out: Path, old: dict | None) -> None:
    """Refuse (:class:`OutputError`) an ``OUT/runs/<run>`` of a demo run name that the demo
    cannot prove its own: the run's ledger names its model, unchanged, as the demo's; or, for
    a run from before ledgers, its model is the one ``demo.json`` records, or the demo was
    killed while training it and its config names this folder, dataset and features."""
    for name in RUNS:
        run = out / "runs" / name
        if not os.path.lexists(run):
            continue
        ledger = Ledger.load(run) if run.is_dir() and not run.is_symlink() else None
        model = ledger.files.get("model.safetensors", {}) if ledger else {}
        if ledger is not None and model.get("command") == COMMAND \
                and ledger.owns("model.safetensors"):
            continue
        if ledger is not None and ledger.legacy is not None:  # a ledger: nothing else proves
            raise OutputError(f"{run}: a run the demo did not train, or one changed since it "
                              "did (yours?); move it out of the way or choose another --out")
        if old and old["runs"].get(name) and _model_digest(run) == old["runs"][name]:
            continue
        if old and old["training"] == name and _trained_here(run, out):
            continue
        raise OutputError(f"{run}: a run the demo did not train, or one changed since it did "
                          "(yours?); move it out of the way or choose another --out")


def _trained_here(run: Path, out: Path) -> bool:
    config = read_run_config(run)
    return (config.get("out"), config.get("data"), config.get("features")) == (
        str(run), str(out / "data"), str(out / "features"))


def _forget_features(feats: Path, video_ids: list[str]) -> None:
    """Delete the feature files of ``video_ids`` that are stmil's (the ledger of ``feats``; in
    a folder from before ledgers, the marker listing them is the proof), and dead writers'
    temporaries; nothing else."""
    if video_ids and feats.is_dir():
        prune(feats, [f"{v}{x}" for v in video_ids for x in (".npy", ".json")],
              lambda p: True)
    remove_stale_temps(feats)


def _stale_features(feats: Path, videos: Path, video_ids: list[str]) -> list[str]:
    """The videos whose features in ``feats`` were made from another file than
    ``videos/<id>.mp4`` (the folder was moved or copied since): the demo's own, made again."""
    stale = []
    for vid in video_ids:
        try:
            meta = read_feature_meta(feats / f"{vid}.json")
            if source_mismatch(meta.identity, videos / f"{vid}.mp4"):
                stale.append(vid)
        except (FeatureError, OSError):
            continue  # missing, or not features: extract decides
    return stale


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`run_demo` made: the metrics ``table`` (text), the ``report`` (HTML file),
    each stage's seconds, and each run's metrics ``{run: {metric: value}}``."""

    table: str
    report: Path
    stage_times: dict[str, float]
    metrics: dict[str, dict]

    def line(self) -> str:
        return f"report: {self.report}"


def run_demo(
    out: Path,
    footage: Path | None = None,
    n_videos: int = 48,
    n_frames: int = 160,
    seed: int = 0,
    iterations: int | None = None,
    val_fraction: float = 0.25,
    n_overlays: int = 4,
    device: str = "auto",
    progress: bool = True,
) -> DemoSummary:
    """Run the whole pipeline into ``out``; returns a :class:`DemoSummary`. Progress, the
    table and the stage times are logged (level INFO).

    ``iterations``: training iterations per run (``None``: :data:`DEMO_ITERATIONS`). Settings are
    checked before anything is written (:class:`ConfigError`); ``out`` must be missing, empty
    or a previous demo output (:class:`OutputError` otherwise). Every stage is resumable: the
    dataset is rebuilt only when its settings change or it is incomplete (and then the
    features made from it are deleted), finished feature files are skipped.
    """
    iterations = DEMO_ITERATIONS if iterations is None else iterations
    check_demo_settings(n_videos, n_frames, seed, iterations, val_fraction, n_overlays)
    out = Path(out).resolve()  # resolved once: every path below is absolute
    footage = Path(footage).resolve() if footage else None
    data, feats = out / "data", out / "features"
    times: dict[str, float] = {}
    settings = {"footage": str(footage) if footage else None, "n_videos": n_videos,
                "n_frames": n_frames, "seed": seed}
    old = _claim(out)
    _check_runs(out, old)
    trained = dict(old["runs"]) if old else {}

    t = time.perf_counter()
    video_ids = _synth_stage(out, settings, old, trained, progress)
    times["synth"] = time.perf_counter() - t
    t = time.perf_counter()
    _extract_stage(data, feats, device, progress)
    times["extract"] = time.perf_counter() - t
    results = _train_stage(out, settings, video_ids, trained, times, iterations=iterations,
                           seed=seed, val_fraction=val_fraction, device=device,
                           progress=progress)
    table = format_table([(n, r.result) for n, r in results.items()], DEMO_TABLE_KEYS)
    report, metrics = _report_stage(out, results, settings, iterations, n_overlays, old, times)
    log.info("\n" + table)
    log.info("\nstage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items())
             + f"; total {sum(times.values()):.0f}s")
    summary = DemoSummary(table, report, times, metrics)
    log.info(summary.line())
    return summary


def _synth_stage(out: Path, settings: dict, old: dict | None, trained: dict[str, str],
                 progress: bool) -> list[str]:
    """Stage 1: the synthetic dataset in ``out/data``, rebuilt only when its ``settings``
    changed (then the demo's features of the old one are deleted first) or it is incomplete;
    returns its video ids, recorded in the marker before extraction starts."""
    # deferred: PyAV, loaded only when the demo runs
    from stmil.synth.dataset import dataset_ready, make_dataset
    from stmil.synth.dataset import read_marker as read_synth_marker

    data, feats = out / "data", out / "features"
    footage = settings["footage"]
    synth_args = dict(footage=[Path(footage)] if footage else None,
                      n_videos=settings["n_videos"], n_frames=settings["n_frames"],
                      seed=settings["seed"])
    ready = dataset_ready(data, **synth_args)
    if old is None or old["settings"] != settings or not ready:
        # The features of another (or a re-rendered) dataset are stale: delete the ones the
        # demo made, and record the new settings before the dataset changes.
        _forget_features(feats, old["videos"] if old else [])
        _write_marker(out, settings, [], trained)
    if not ready:
        log.info(f"[1/5] synth: {settings['n_videos']} videos of {settings['n_frames']} frames")
        make_dataset(data, **synth_args, progress=progress, overwrite=True)
    else:
        log.info(f"[1/5] synth: {data} is up to date")
    video_ids = sorted(read_synth_marker(data)["videos"])
    # before extraction: a kill leaves them listed
    _write_marker(out, settings, video_ids, trained)
    _forget_features(feats, _stale_features(feats, data / VIDEOS_DIR, video_ids))
    return video_ids


def _extract_stage(data: Path, feats: Path, device: str, progress: bool) -> None:
    """Stage 2: I3D features of every video (finished ones skipped); any failure stops the
    demo, naming the failures list."""
    log.info("[2/5] extract I3D Mixed_4e cuboid features")
    extractor = FeatureExtractor(device=device)
    summary = extract_many([data / VIDEOS_DIR], feats, extractor, ExtractSettings(),
                           progress=progress)
    log.info("      " + summary.line())
    if summary.failed:
        raise StmilError(f"feature extraction failed for {len(summary.failed)} videos "
                         f"(see {feats / 'failures.json'})")


def _train_stage(out: Path, settings: dict, video_ids: list[str], trained: dict[str, str],
                 times: dict[str, float], *, iterations: int, seed: int, val_fraction: float,
                 device: str, progress: bool) -> dict[str, EvaluateSummary]:
    """Stage 3: train and evaluate each of :data:`RUNS` in ``out/runs``, recording in the
    marker which run is training (a kill leaves it named) and each finished model's digest in
    ``trained``; returns each run's evaluation, and adds the stage times to ``times``."""
    data, feats, runs_dir = out / "data", out / "features", out / "runs"
    results: dict[str, EvaluateSummary] = {}
    for i, (name, kwargs) in enumerate(RUNS.items(), 1):
        t = time.perf_counter()
        log.info(f"[3/5] train {i}/{len(RUNS)}: {name}")
        _write_marker(out, settings, video_ids, trained, training=name)
        with _quiet(logging.getLogger(train.__module__)):
            train(data, feats, runs_dir / name, iterations=iterations, seed=seed,
                  val_fraction=val_fraction, val_every=25, device=device, progress=progress,
                  command=COMMAND, **kwargs)
        if digest := _model_digest(runs_dir / name):
            trained[name] = digest
        _write_marker(out, settings, video_ids, trained)
        times[f"train {name}"] = time.perf_counter() - t
        t = time.perf_counter()
        results[name] = evaluate(data, feats, runs_dir / name)
        times["evaluate"] = times.get("evaluate", 0.0) + time.perf_counter() - t
    return results


def _report_stage(out: Path, results: dict[str, EvaluateSummary], settings: dict,
                  iterations: int, n_overlays: int, old: dict | None,
                  times: dict[str, float]) -> tuple[Path, dict[str, dict]]:
    """Stages 4 and 5: overlays of the runs' scores and the HTML report (with
    ``metrics.json``), written as one unit; returns the report's path and each run's
    metrics."""
    runs_dir = out / "runs"
    runs = [{"name": n, "run": runs_dir / n, "config": read_run_config(runs_dir / n),
             "metrics": {k: v for k, v in r.result.items() if k != "settings"},
             "curves": r.curves, "videos": r.videos} for n, r in results.items()]
    metrics = {r["name"]: r["metrics"] for r in runs}
    with tempfile.TemporaryDirectory(dir=out, prefix=".overlays-", suffix=".tmp") as tmp:
        t = time.perf_counter()
        log.info("[4/5] overlays")
        overlays = _overlays(Path(tmp), results, n_overlays)
        times["overlays"] = time.perf_counter() - t

        t = time.perf_counter()
        log.info("[5/5] report")
        metrics_json = json.dumps(_json_safe({"settings": settings, "iterations": iterations,
                                              "metrics": metrics}), indent=1) + "\n"
        report = write_report(out, runs, overlays, title="stmil demo", stage_times=times,
                              files={"metrics.json": metrics_json}, command=COMMAND,
                              legacy=_legacy_ours(old))
        times["report"] = time.perf_counter() - t
    return report, metrics


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """``logger``'s INFO lines silenced (the demo prints its own line per training)."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _json_safe(x):
    """``x`` with numpy scalars made plain and NaN/inf made null (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _overlays(folder: Path, results: dict[str, EvaluateSummary], n: int) -> list[dict]:
    """GIF overlays of the method next to the grid-1 baseline for ``n`` anomalous test videos,
    written into ``folder``."""
    from stmil.overlay import render_overlay  # deferred: PyAV

    method, base = results["weak-cuboid-mil"], results["grid1-baseline"]
    base_maps = {v.record.video_id: maps for v, maps in base.videos}
    picked = [(v, maps) for v, maps in method.videos if v.record.label == 1 and v.record.path]
    done = []
    for v, maps in picked[:n]:  # the maps evaluate() already computed: nothing is rescored
        scores = scores_from_maps(maps, method.result["settings"]["model_grid"], v.meta,
                                  v.clip_ranges)
        baseline = scores_from_maps(base_maps[v.record.video_id],
                                    base.result["settings"]["model_grid"], v.meta, v.clip_ranges)
        dest = folder / f"{v.record.video_id}.gif"
        render_overlay(v.record.path, scores, dest, gt_boxes=v.record.boxes, baseline=baseline)
        done.append({"video_id": v.record.video_id, "path": dest})
    return done
