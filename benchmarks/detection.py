"""Detection quality over seeds: methods side by side, per seed and mean +- std.

Each seed builds its own dataset (``stmil synth``: different scenes, events, splits), extracts
its features and trains every run with that seed, with the demo's settings (150 iterations,
a validation split of 25% of train for model selection, checked every 25 iterations); nothing
is tuned on the test split. Each run is then calibrated (``stmil calibrate``: validation split,
video labels only) and evaluated at that threshold too (the ``cal_`` columns: false-positive
cuboids per anomalous clip, event recall, false incidents per hour). Every value quoted from
this benchmark is one this script prints: a per-seed table (one row per run and seed), the
mean +- std table and a compact per-seed table of four columns.

Runs (``--runs``; default: all):

    paper      weak cuboid MIL, Sultani's ranking loss (train --method paper)
    topk       train --method topk --gate none (top-3 mean, every normal instance a negative)
    paper-tv   paper + train --lambda-tv 1e-3 (spatiotemporal total variation)
    topk-tv    topk + --lambda-tv 1e-3
    paper-st   paper + train --self-train 2 (pseudo-label self-training, validation-guarded)
    topk-st    topk + --self-train 2
    paper-memory  paper + train --gate memory (normal-memory gate, docs/method.md)
    topk-memory   topk + --gate memory (train's default: plain ``stmil train``)
    topk-tv-memory, topk-st-memory   topk-tv, topk-st + --gate memory
    topk-memory-motion   topk-memory + --motion gate (the motion prior; train's default:
                  plain ``stmil train`` on features that carry motion energy)
    paper-motion, topk-motion, boxes-motion   paper, topk, boxes + --motion gate
    grid1      the video-segment baseline (train --method paper --instances frame)
    boxes      the boxes-supervised reference (train --supervision boxes; an upper bound)

Examples (the issue-13 ablation on the hard scenario; the README's earlier tables used
``--runs paper grid1 boxes`` at the demo's 48 videos of 160 frames):

    python benchmarks/detection.py --out bench-hard --scenario hard --videos 32 --frames 96
    python benchmarks/detection.py --out bench-det --seeds 0 1 2 --runs paper grid1 boxes
    python benchmarks/detection.py --out bench-det-vtest --footage data/vtest.avi

A rerun with the same ``--out`` resumes: a complete synth output, finished features and
trained runs are kept (delete a run folder to retrain it). A ``-memory`` run whose base run
(the name without ``-memory``) is already trained is derived from it instead of retrained: the
gate is added after training and the scorer never sees it, so this is the model that
``train --gate memory`` writes (tests/mil/test_memory.py checks the weights bit for bit;
``--no-derive`` trains it instead). A ``-motion`` run is derived from its base the same way
(the motion gate is applied at scoring; tests/features/test_motion.py).

``--backfill-motion``: feature files extracted before stmil stored motion energy get it,
computed from their videos by :func:`stmil.features.motion.motion_energy` on the clips
``extract`` cuts (what ``extract`` now stores), written into their ``.json``; the arrays are
untouched. The issue-13 ablation's folders were extracted before the motion prior existed.

``--evaluate-only`` skips synth, extraction and training: it re-evaluates every run folder
already in ``OUT/seed<N>/runs/`` with the current evaluation code and prints the same tables.
``--collect`` prints them from what those evaluations recorded in each run's ``metrics.json``
(the ablation tables of docs/method.md, gathered after runs were added a few at a time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from stmil.datasets import load_dataset
from stmil.evaluation.evaluate import at_paper_threshold, dataset_key, evaluate, read_metrics
from stmil.features.extract import ExtractSettings, FeatureExtractor, extract_many
from stmil.features.motion import MOTION, motion_energy, motion_scale
from stmil.features.pipeline_config import PipelineConfig
from stmil.features.store import load_dataset_features
from stmil.features.video import iter_clips
from stmil.live.calibrate import calibrate
from stmil.mil.config import FIELDS, TrainConfig
from stmil.mil.run import load_model, save_model
from stmil.mil.train import _carve_validation, _memory_gate, train  # derive_gated mirrors train
from stmil.synth.dataset import make_dataset

KEYS = ("frame_auc", "frame_ap", "cuboid_auc", "pixel_auroc", "pointing_accuracy", "patch_ap",
        "loc_false_positives", "false_alarm_rate", "cal_loc_fp", "cal_recall", "cal_false_per_h")
#: The run's own threshold: ``stmil calibrate`` (validation split, video labels only) and the
#: evaluate's incident block: false-positive cuboids per anomalous clip, events found, false
#: incidents per hour, at that threshold.
CAL_KEYS = {"cal_loc_fp": "loc_false_positives", "cal_recall": "recall",
            "cal_false_per_h": "false_per_hour"}
TV = 1e-3
RUNS: dict[str, dict] = {  # every run names its method and gate: defaults may change
    "paper": {"method": "paper", "gate": "none"},
    "topk": {"method": "topk", "gate": "none"},
    "paper-tv": {"method": "paper", "gate": "none", "lambda_tv": TV},
    "topk-tv": {"method": "topk", "gate": "none", "lambda_tv": TV},
    "paper-st": {"method": "paper", "gate": "none", "self_train": 2},
    "topk-st": {"method": "topk", "gate": "none", "self_train": 2},
    "paper-memory": {"method": "paper", "gate": "memory"},
    "topk-memory": {"method": "topk", "gate": "memory"},
    "topk-tv-memory": {"method": "topk", "gate": "memory", "lambda_tv": TV},
    "topk-st-memory": {"method": "topk", "gate": "memory", "self_train": 2},
    "topk-memory-motion": {"method": "topk", "gate": "memory", "motion": "gate"},
    "paper-motion": {"method": "paper", "gate": "none", "motion": "gate"},
    "topk-motion": {"method": "topk", "gate": "none", "motion": "gate"},
    "boxes-motion": {"gate": "none", "supervision": "boxes", "motion": "gate"},
    "grid1": {"method": "paper", "gate": "none", "instances": "frame"},
    "boxes": {"gate": "none", "supervision": "boxes"},
}
for _settings in RUNS.values():  # the motion prior only where a run names it
    _settings.setdefault("motion", "none")
COMPACT = ("frame_auc", "pointing_accuracy", "patch_ap", "cal_loc_fp")
ITERATIONS, VAL_FRACTION, VAL_EVERY = 150, 0.25, 25


def metrics_of(seed_dir: Path, name: str) -> dict:
    run = seed_dir / "runs" / name
    calibrate(run, seed_dir / "data", seed_dir / "features")  # afresh, with the defaults
    return row(evaluate(seed_dir / "data", seed_dir / "features", run).result)


def row(result: dict) -> dict:
    """The :data:`KEYS` of an evaluation (its ``incidents`` block holds the ``cal_`` ones; the
    thresholded ones, ``loc_false_positives`` and ``false_alarm_rate``, are those at 0.5, as
    in the tables of docs/method.md, whatever threshold the evaluation used)."""
    at_half = at_paper_threshold(result)
    return {k: result["incidents"][CAL_KEYS[k]] if k in CAL_KEYS
            else at_half[k] if k in at_half else result.get(k) for k in KEYS}


def collect(seed_dir: Path) -> dict[str, dict]:
    """Metrics of every run of :data:`RUNS` in ``seed_dir/runs`` on its test split as its
    ``metrics.json`` recorded them (evaluated afresh, calibrated first, where that record
    lacks the calibrated columns)."""
    out = {}
    for run in sorted(p for p in (seed_dir / "runs").iterdir()
                      if p.name in RUNS and (p / "model.safetensors").is_file()):
        recorded = read_metrics(run).get("test", {}).get(dataset_key(seed_dir / "data"))
        if recorded is None or recorded.get("incidents") is None:
            out[run.name] = metrics_of(seed_dir, run.name)
        else:
            out[run.name] = row(recorded)
    return out


def reevaluate(seed_dir: Path) -> dict[str, dict]:
    """Metrics of every run in ``seed_dir/runs`` on its test split, evaluated afresh."""
    runs = sorted(p.name for p in (seed_dir / "runs").iterdir() if (p / "model.safetensors")
                  .is_file())
    return {name: metrics_of(seed_dir, name) for name in runs}


def run_seed(seed_dir: Path, seed: int, args: argparse.Namespace, extractor: FeatureExtractor
             ) -> dict:
    """Synth, extract, train and evaluate ``args.runs`` for one seed; metrics and times."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    if not _synth_done(seed_dir / "data"):  # a rerun keeps the videos (and so the features)
        make_dataset(seed_dir / "data", footage=[args.footage] if args.footage else None,
                     n_videos=args.videos, n_frames=args.frames, seed=seed, progress=False,
                     scenario=args.scenario)
    times["synth"] = time.perf_counter() - t
    t = time.perf_counter()
    extract_many([seed_dir / "data" / "videos"], seed_dir / "features", extractor,
                 ExtractSettings(), progress=False,
                 pipeline=PipelineConfig(workers=args.workers))
    times["extract"] = time.perf_counter() - t
    metrics = {}
    for name in args.runs:
        t = time.perf_counter()
        for suffix in ("-memory", "-motion"):  # topk-tv-memory: topk-tv + the memory gate
            base = seed_dir / "runs" / name.removesuffix(suffix)
            if not (seed_dir / "runs" / name / "model.safetensors").is_file() and name.endswith(
                    suffix) and (base / "model.safetensors").is_file() and args.derive:
                derive_gated(seed_dir, base, seed_dir / "runs" / name, suffix[1:])
        if not (seed_dir / "runs" / name / "model.safetensors").is_file():  # resume
            train(seed_dir / "data", seed_dir / "features", seed_dir / "runs" / name,
                  iterations=args.iterations, seed=seed, val_fraction=VAL_FRACTION,
                  val_every=VAL_EVERY, device="auto", progress=False, **RUNS[name])
        times[f"train {name}"] = time.perf_counter() - t
        metrics[name] = metrics_of(seed_dir, name)
        print(f"seed {seed} {name}: " + ", ".join(f"{k} {fmt(v)}" for k, v in
                                                  metrics[name].items()), flush=True)
    return {"metrics": metrics, "stage_times": times}


def derive_gated(seed_dir: Path, base: Path, out: Path, what: str = "memory") -> None:
    """``base`` + the normal-memory gate (``what`` "memory") or the motion gate ("motion"),
    written to ``out``: what ``train(..., gate="memory")`` or ``train(..., motion="gate")``
    with ``base``'s settings writes (same validation carve, same normal videos, same seed)."""
    model, config = load_model(base)
    extra = {"gate": "memory"} if what == "memory" else {"motion": "gate"}
    cfg = TrainConfig.from_dict({k: config[k] for k in FIELDS if k in config} | extra)
    config = config | cfg.to_dict() | {"out": str(out)}
    videos = load_dataset_features(load_dataset(seed_dir / "data", "train", cfg.format),
                                   seed_dir / "features", cfg.skip_missing)
    labels = np.array([v.record.label for v in videos])
    val = _carve_validation(labels, cfg.val_fraction, np.random.default_rng(cfg.seed))
    norm = np.flatnonzero(~val & (labels == 0))
    if what == "memory":
        model.gate = _memory_gate(videos, norm, config["grid"] == 1, cfg)
    else:
        config["motion_scale"] = motion_scale([videos[i].motion for i in norm])
    tmp = out.parent / f".{out.name}.derive"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("metrics*", "calibration.json"))
    save_model(tmp / "model.safetensors", model, config)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    tmp.rename(out)


def backfill_motion(seed_dir: Path) -> int:
    """Write motion energy into every feature ``.json`` of ``seed_dir`` that lacks it (see
    the module docstring); returns how many were written."""
    n = 0
    for meta_path in sorted((seed_dir / "features").glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or "n_clips" not in meta or "motion" in meta:
            continue
        fps = meta["fps"] if meta["fps"] != meta.get("source_fps", meta["fps"]) else None
        m = np.concatenate([motion_energy(b.clips, meta["grid"]) for b in iter_clips(
            meta["source"], meta["clip_len"], meta["stride"], meta["size"], fps, meta["tail"])])
        if m.shape[0] != meta["n_clips"]:
            raise SystemExit(f"{meta_path}: {m.shape[0]} clips of motion, {meta['n_clips']} "
                             "of features")
        meta |= {"motion_rule": MOTION, "motion": m.tolist()}
        tmp = meta_path.with_name(f".{meta_path.name}.tmp")
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
        tmp.replace(meta_path)
        n += 1
    return n


def _synth_done(root: Path) -> bool:
    """Whether ``root`` holds a complete synth output (a rerun then skips synth)."""
    try:
        return json.loads((root / "synth.json").read_text())["complete"] is True
    except (OSError, ValueError, KeyError):
        return False


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def tables(per_seed: dict[int, dict], title: str) -> str:
    """The per-seed table and the mean +- std table, as markdown."""
    order = {name: i for i, name in enumerate(RUNS)}  # RUNS' order, then others by name
    runs = sorted({r for s in per_seed.values() for r in s["metrics"]},
                  key=lambda r: (order.get(r, len(order)), r))
    lines = [f"{title}; seeds {list(per_seed)}", "",
             "| run | seed | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
    for run in runs:
        for seed, s in per_seed.items():
            if run not in s["metrics"]:  # --evaluate-only: a run one seed lacks
                continue
            lines.append(f"| {run} | {seed} | "
                         + " | ".join(fmt(s["metrics"][run][k]) for k in KEYS) + " |")
    lines += ["", "mean +- std (population std over the seeds)", "",
              "| run | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    for run in runs:
        cells = []
        for k in KEYS:
            vals = [s["metrics"][run][k] for s in per_seed.values() if run in s["metrics"]]
            vals = np.array([v for v in vals if v is not None], dtype=float)
            cells.append(f"{vals.mean():.3f} ± {vals.std():.3f}" if len(vals) else "-")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines += ["", "per seed, in seed order", "",
              "| run | " + " | ".join(COMPACT) + " |", "|---|" + "---|" * len(COMPACT)]
    for run in runs:
        lines.append(f"| {run} | " + " | ".join(
            " / ".join(fmt(s["metrics"][run][k]) for s in per_seed.values() if run in s["metrics"])
            for k in COMPACT) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--footage", type=Path, default=None)
    p.add_argument("--scenario", choices=("default", "hard"), default="default")
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--frames", type=int, default=160)
    p.add_argument("--iterations", type=int, default=ITERATIONS)
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    p.add_argument("--workers", type=int, default=2, help="extraction decode workers")
    p.add_argument("--no-derive", dest="derive", action="store_false",
                   help="train -memory runs even where their base run exists")
    p.add_argument("--backfill-motion", action="store_true",
                   help="first give feature files without motion energy theirs")
    p.add_argument("--evaluate-only", action="store_true",
                   help="re-evaluate the runs already under --out; train nothing")
    p.add_argument("--collect", action="store_true",
                   help="print the tables of every run already under --out from the metrics "
                        "its evaluation recorded; train nothing")
    args = p.parse_args()
    title = (f"footage: {args.footage or 'built-in'}, scenario {args.scenario}, "
             f"{args.videos} videos of {args.frames} frames, {args.iterations} iterations")
    per_seed: dict[int, dict] = {}
    reuse = args.evaluate_only or args.collect
    extractor = None if reuse else FeatureExtractor(device="auto")
    for seed in args.seeds:
        seed_dir = args.out / f"seed{seed}"
        if args.backfill_motion:
            print(f"seed {seed}: motion energy written for {backfill_motion(seed_dir)} videos",
                  flush=True)
        if reuse:
            per_seed[seed] = {"metrics": (collect if args.collect else reevaluate)(seed_dir)}
            continue
        per_seed[seed] = run_seed(seed_dir, seed, args, extractor)
    name = ("detection-collected.json" if args.collect else "detection-reevaluated.json"
            if args.evaluate_only else "detection.json")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text(json.dumps(per_seed, indent=1))
    print("\n" + tables(per_seed, title))


if __name__ == "__main__":
    main()
