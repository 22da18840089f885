"""Issue 13, method 3: does a motion prior make the cuboid maps more precise? Measured before
it is built into the feature format.

The prior (:mod:`stmil.features.motion`, whose functions this script calls): each cuboid's
motion energy in a clip (the mean absolute difference of consecutive frames inside the
cuboid's cell, on the very frames the features were extracted from: the whole frame resized
to 224 x 224, values in [-1, 1]), turned into a gate

    g = min(1, m / q)     q = the 90th percentile of m over every cuboid of every clip of the
                              run's normal training videos (validation ones left out)

and multiplied into the run's cuboid scores: a cuboid that moves at least as much as the top
10% of normal cuboids keeps its score, a static one loses it in proportion. The rule and q's
percentile were fixed before any number was seen; nothing is chosen on the test split.

The gate comes after training and the scorer never sees it, so a run's "motion" row is what
``stmil train --motion gate`` (with the run's other settings) and ``stmil evaluate`` give on
features that ``stmil extract`` made with motion energy (tests/features/test_motion.py checks
both halves: the stored energy and the gated maps). The benchmark folders' features predate
the motion record, so this script computes it from the videos.

For each seed folder of ``benchmarks/detection.py`` (``OUT/seed<N>/{data,features,runs}``) and
each ``--runs`` run, the test split is evaluated with the run's maps as they are and gated by
the prior (:func:`stmil.evaluation.evaluate.compute_metrics`, the metrics ``evaluate``
reports), and the script prints the mean +- std over the seeds and the per-seed patch AP.

    python benchmarks/motion_prior.py --out /work/bench/builtin --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from stmil.datasets import load_dataset
from stmil.evaluation.evaluate import compute_metrics
from stmil.features.motion import PERCENTILE, motion_energy, motion_gate, motion_scale
from stmil.features.store import load_dataset_features
from stmil.features.video import iter_clips
from stmil.mil.run import load_model
from stmil.mil.train import _carve_validation  # the validation split train carves
from stmil.score import clip_maps

KEYS = ("frame_auc", "frame_ap", "cuboid_auc", "pixel_auroc", "pointing_accuracy", "patch_ap")


def video_motion(path: Path, meta: dict) -> np.ndarray:
    """``(n_clips, G*G)`` motion energy of the clips ``extract`` cut (same length, stride,
    size, rate and tail), by :func:`stmil.features.motion.motion_energy`."""
    fps = meta["fps"] if meta["fps"] != meta.get("source_fps", meta["fps"]) else None
    return np.concatenate([motion_energy(b.clips, meta["grid"]) for b in iter_clips(
        path, meta["clip_len"], meta["stride"], meta["size"], fps, meta["tail"])])


def seed_metrics(seed_dir: Path, runs: list[str]) -> dict[str, dict[str, dict]]:
    data, feats = seed_dir / "data", seed_dir / "features"
    train = load_dataset_features(load_dataset(data, "train"), feats)
    labels = np.array([v.record.label for v in train])
    test = load_dataset_features(load_dataset(data, "test"), feats)
    motion = [video_motion(v.record.path, v.meta) for v in test]
    for v, m in zip(test, motion):
        if m.shape[0] != v.features.shape[0]:
            raise SystemExit(f"{v.record.path}: {m.shape[0]} clips of motion vs "
                             f"{v.features.shape[0]} of features")
    out: dict[str, dict[str, dict]] = {}
    for name in runs:
        model, config = load_model(seed_dir / "runs" / name)
        # the normal training videos of this run: its validation split left out, as train does
        val = _carve_validation(labels, config["val_fraction"],
                                np.random.default_rng(config["seed"]))
        q = motion_scale([video_motion(v.record.path, v.meta) for v, held in zip(train, val)
                          if v.record.label == 0 and not held])
        maps = [clip_maps(model, config, v.features) for v in test]
        gated = [mp * motion_gate(m, q) for mp, m in zip(maps, motion)]
        out[name] = {"as is": _keys(compute_metrics(test, maps)),
                     "motion": _keys(compute_metrics(test, gated))}
    return out


def _keys(result: dict) -> dict:
    return {k: result[k] for k in KEYS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="a benchmarks/detection.py --out")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=["paper", "topk-memory"])
    args = p.parse_args()
    torch.set_num_threads(2)
    per_seed = {s: seed_metrics(args.out / f"seed{s}", args.runs) for s in args.seeds}
    print(f"\n{args.out}: seeds {args.seeds}, motion gate min(1, m / q{PERCENTILE})\n")
    print("| run | prior | " + " | ".join(KEYS) + " | patch_ap per seed |")
    print("|---|---|" + "---|" * (len(KEYS) + 1))
    for name in args.runs:
        for prior in ("as is", "motion"):
            vals = {k: [per_seed[s][name][prior][k] for s in args.seeds] for k in KEYS}
            cells = [f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in vals.values()]
            seeds = " / ".join(f"{x:.3f}" for x in vals["patch_ap"])
            print(f"| {name} | {prior} | " + " | ".join(cells) + f" | {seeds} |")


if __name__ == "__main__":
    main()
