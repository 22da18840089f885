"""Detection quality over seeds: the demo's three runs, mean +- std over 3 seeds.

Each seed builds its own dataset (different scenes, events, splits) and trains with that seed;
nothing is tuned on the test split. Reproduce the README numbers with:

    python benchmarks/detection.py --out bench-det --seeds 0 1 2
    python benchmarks/detection.py --out bench-det-vtest --seeds 0 1 2 --footage data/vtest.avi
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stmil.demo import run_demo

KEYS = ("frame_auc", "frame_ap", "cuboid_auc", "pixel_auroc", "pointing_accuracy",
        "false_alarm_rate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--footage", type=Path, default=None)
    p.add_argument("--videos", type=int, default=48)
    args = p.parse_args()
    per_seed: dict[int, dict] = {}
    for seed in args.seeds:
        res = run_demo(args.out / f"seed{seed}", footage=args.footage, n_videos=args.videos,
                       seed=seed, progress=False, log=lambda m: None)
        per_seed[seed] = {"metrics": res["metrics"], "stage_times": res["stage_times"]}
    (args.out / "detection.json").write_text(json.dumps(per_seed, indent=1))
    runs = list(next(iter(per_seed.values()))["metrics"])
    print(f"\nfootage: {args.footage or 'built-in'}; seeds {args.seeds}; mean +- std\n")
    print("| run | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for run in runs:
        cells = []
        for k in KEYS:
            vals = [s["metrics"][run][k] for s in per_seed.values()]
            vals = np.array([v for v in vals if v is not None], dtype=float)
            cells.append(f"{vals.mean():.3f} ± {vals.std():.3f}" if len(vals) else "-")
        print(f"| {run} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
