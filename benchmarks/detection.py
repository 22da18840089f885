"""Detection quality over seeds: the demo's three runs, per seed and mean +- std.

Each seed builds its own dataset (different scenes, events, splits) and trains with that seed;
nothing is tuned on the test split. Every value quoted from this benchmark is one this script
prints: a per-seed table (one row per run and seed) and the mean +- std table. Reproduce the
README numbers with (about 6 minutes per seed on 2 idle cores):

    python benchmarks/detection.py --out bench-det --seeds 0 1 2
    python benchmarks/detection.py --out bench-det-vtest --seeds 0 1 2 --footage data/vtest.avi

``--evaluate-only`` skips synth, extraction and training: it re-evaluates the runs already in
``OUT/seed<N>/runs/`` with the current evaluation code (training does not depend on it) and
prints the same tables, in seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stmil.demo import RUNS, run_demo
from stmil.evaluation.evaluate import evaluate

KEYS = ("frame_auc", "frame_ap", "cuboid_auc", "pixel_auroc", "pointing_accuracy",
        "false_alarm_rate")


def reevaluate(seed_dir: Path) -> dict[str, dict]:
    """Metrics of the demo's runs in ``seed_dir`` on its test split, evaluated afresh."""
    out = {}
    for name in RUNS:
        r = evaluate(seed_dir / "data", seed_dir / "features", seed_dir / "runs" / name,
                     log=lambda m: None)
        out[name] = {k: r[k] for k in KEYS}
    return out


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def tables(per_seed: dict[int, dict], footage: Path | None) -> str:
    """The per-seed table and the mean +- std table, as markdown."""
    runs = list(next(iter(per_seed.values()))["metrics"])
    lines = [f"footage: {footage or 'built-in'}; seeds {list(per_seed)}", "",
             "| run | seed | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
    for run in runs:
        for seed, s in per_seed.items():
            lines.append(f"| {run} | {seed} | "
                         + " | ".join(fmt(s["metrics"][run][k]) for k in KEYS) + " |")
    lines += ["", "mean +- std (population std over the seeds)", "",
              "| run | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    for run in runs:
        cells = []
        for k in KEYS:
            vals = [s["metrics"][run][k] for s in per_seed.values()]
            vals = np.array([v for v in vals if v is not None], dtype=float)
            cells.append(f"{vals.mean():.3f} ± {vals.std():.3f}" if len(vals) else "-")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--footage", type=Path, default=None)
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--evaluate-only", action="store_true",
                   help="re-evaluate the runs already under --out; train nothing")
    args = p.parse_args()
    per_seed: dict[int, dict] = {}
    for seed in args.seeds:
        seed_dir = args.out / f"seed{seed}"
        if args.evaluate_only:
            per_seed[seed] = {"metrics": reevaluate(seed_dir)}
            continue
        res = run_demo(seed_dir, footage=args.footage, n_videos=args.videos, seed=seed,
                       progress=False, log=lambda m: None)
        per_seed[seed] = {"metrics": {n: {k: m.get(k) for k in KEYS}
                                      for n, m in res["metrics"].items()},
                          "stage_times": res["stage_times"]}
    name = "detection-reevaluated.json" if args.evaluate_only else "detection.json"
    (args.out / name).write_text(json.dumps(per_seed, indent=1))
    print("\n" + tables(per_seed, args.footage))


if __name__ == "__main__":
    main()
