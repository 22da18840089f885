"""The main job: synth -> extract -> train three runs -> evaluate -> overlays -> report.

The three runs are the method (weak cuboid MIL), the video-segment baseline (grid 1, Sultani's
setting) and the boxes-supervised reference (an upper bound). Model selection uses a
validation split carved from train; the test split is only evaluated.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from stmil.atomic import check_writable
from stmil.errors import StmilError
from stmil.evaluate import evaluate, format_table
from stmil.extract import ExtractSettings, FeatureExtractor, extract_many
from stmil.report import write_report
from stmil.score import scores_from_maps
from stmil.train import train

DEMO_TABLE_KEYS = ("frame_auc", "frame_ap", "cuboid_auc", "pixel_auroc", "pointing_accuracy")
RUNS = {
    "weak-cuboid-mil": {},
    "grid1-baseline": {"grid": 1},
    "boxes-supervised": {"supervision": "boxes"},
}
DEMO_ITERATIONS = 150


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
    log: Callable[[str], None] = print,
) -> dict:
    """Run the whole pipeline into ``out``; returns ``{"table", "metrics", "stage_times"}``.

    Every stage is resumable: the dataset is rebuilt only when its settings change, finished
    feature files are skipped.
    """
    from stmil.synth import make_dataset

    out = Path(out)
    check_writable(out)
    data, feats, runs_dir = out / "data", out / "features", out / "runs"
    times: dict[str, float] = {}
    iterations = iterations or DEMO_ITERATIONS

    t = time.perf_counter()
    settings = {"footage": str(footage) if footage else None, "n_videos": n_videos,
                "n_frames": n_frames, "seed": seed}
    stamp = out / "synth-settings.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == settings):
        log(f"[1/5] synth: {n_videos} videos of {n_frames} frames")
        shutil.rmtree(feats, ignore_errors=True)  # features of another dataset would be stale

        make_dataset(data, footage=[footage] if footage else None, n_videos=n_videos,
                     n_frames=n_frames, seed=seed, progress=progress)
        stamp.write_text(json.dumps(settings))
    times["synth"] = time.perf_counter() - t

    t = time.perf_counter()
    log("[2/5] extract I3D Mixed_4e cuboid features")
    extractor = FeatureExtractor(device=device)
    summary = extract_many([data / "videos"], feats, extractor, ExtractSettings(),
                           progress=progress, log=log)
    log("      " + summary.line())
    if summary.failed:
        raise StmilError(f"feature extraction failed for {len(summary.failed)} videos")
    times["extract"] = time.perf_counter() - t

    results: dict[str, dict] = {}
    for i, (name, kwargs) in enumerate(RUNS.items(), 1):
        t = time.perf_counter()
        log(f"[3/5] train {i}/3: {name}")
        train(data, feats, runs_dir / name, iterations=iterations, seed=seed,
              val_fraction=val_fraction, val_every=25, device=device, progress=progress,
              log=lambda m: None, **kwargs)
        times[f"train {name}"] = time.perf_counter() - t
        t = time.perf_counter()
        results[name] = evaluate(data, feats, runs_dir / name, log=log)
        times["evaluate"] = times.get("evaluate", 0.0) + time.perf_counter() - t

    t = time.perf_counter()
    log("[4/5] overlays")
    overlays = _overlays(out, results, n_overlays)
    times["overlays"] = time.perf_counter() - t

    t = time.perf_counter()
    log("[5/5] report")
    table = format_table([(n, r) for n, r in results.items()], DEMO_TABLE_KEYS)
    runs = [{"name": n, "run": runs_dir / n, "config": _config(runs_dir / n),
             "metrics": {k: r[k] for k in r if k not in ("curves", "videos", "settings")},
             "curves": r["curves"], "videos": r["videos"]} for n, r in results.items()]
    report = write_report(out, runs, overlays, title="stmil demo", stage_times=times)
    times["report"] = time.perf_counter() - t
    print("\n" + table)
    print("\nstage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items())
          + f"; total {sum(times.values()):.0f}s")
    print(f"report: {report}")
    return {"table": table, "report": report, "stage_times": times,
            "metrics": {n: runs[i]["metrics"] for i, n in enumerate(results)}}


def _config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def _overlays(out: Path, results: dict, n: int) -> list[dict]:
    """GIF overlays of the method next to the grid-1 baseline for ``n`` anomalous test videos."""
    from stmil.overlay import render_overlay

    method, base = results["weak-cuboid-mil"], results["grid1-baseline"]
    base_maps = {v.record.video_id: maps for v, maps in base["videos"]}
    picked = [(v, maps) for v, maps in method["videos"] if v.record.label == 1 and v.record.path]
    done = []
    for v, maps in picked[:n]:  # the maps evaluate() already computed: nothing is rescored
        scores = scores_from_maps(maps, method["settings"]["model_grid"], v.meta, v.clip_ranges)
        baseline = scores_from_maps(base_maps[v.record.video_id],
                                    base["settings"]["model_grid"], v.meta, v.clip_ranges)
        dest = out / "overlays" / f"{v.record.video_id}.gif"
        dest.parent.mkdir(parents=True, exist_ok=True)
        render_overlay(v.record.path, scores, dest, gt_boxes=v.record.boxes, baseline=baseline)
        done.append({"video_id": v.record.video_id, "path": dest})
    return done
