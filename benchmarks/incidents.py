"""Print a run's incident numbers on a split at several thresholds and clip strides.

The diagnosis sweeps of benchmarks/NOTES.md (issue 11): the incidents ``stmil evaluate``
reports at the run's calibrated threshold (:func:`stmil.evaluation.incidents.incident_metrics`,
same rules and event settings), at other thresholds, and with only every k-th clip scored, as
``stmil watch --stride 16k`` scores them (clips 0, k, 2k, ... of the native-rate features). A
diagnosis only: thresholds read off a test split must not be used to choose one. Seconds::

    .venv/bin/python benchmarks/incidents.py --data demo-out/data --features demo-out/features \\
        --model demo-out/runs/weak-cuboid-mil --thresholds 0.2385 0.2889 0.34 0.619 --every 1 2 3
"""

from __future__ import annotations

import argparse
import dataclasses

from stmil.datasets import load_dataset
from stmil.evaluation.incidents import incident_metrics
from stmil.features.store import load_dataset_features
from stmil.live.calibrate import read_calibration
from stmil.live.incidents import EventConfig
from stmil.mil.detector import Detector


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--features", required=True, help="features folder (the run's settings)")
    p.add_argument("--model", required=True, help="run folder")
    p.add_argument("--split", default="test")
    p.add_argument("--thresholds", type=float, nargs="*", default=[],
                   help="incident thresholds (default: the run's calibrated one)")
    p.add_argument("--every", type=int, nargs="+", default=[1],
                   help="score every k-th clip only (1: every clip; 2: watch's --stride 32)")
    args = p.parse_args()

    detector = Detector.load(args.model)
    cal = read_calibration(args.model)
    events = cal.events if cal is not None else EventConfig()
    thresholds = args.thresholds or [events.threshold]
    videos = load_dataset_features(load_dataset(args.data, args.split), args.features)
    maps = [detector.maps(v.features, v.motion) for v in videos]  # (n_clips, G*G) each
    print(f"{len(videos)} {args.split} videos; calibrated threshold "
          f"{'-' if cal is None else f'{cal.threshold:.4f}'}; hysteresis {events.hysteresis}, "
          f"min duration {events.min_duration} s, merge gap {events.merge_gap} s")
    print(f"{'every':>5} {'threshold':>9} {'found':>8} {'missed':>6} {'false':>5} "
          f"{'false/h':>8}")
    for k in args.every:
        # Clips 0, k, 2k, ...: a clip stride k times the features' (ranges from the metadata).
        sub = [dataclasses.replace(v, meta=dataclasses.replace(
                   v.meta, stride=v.meta.stride * k, n_clips=len(m[::k]), motion=None))
               for v, m in zip(videos, maps)]
        for t in thresholds:
            r = incident_metrics(sub, [m[::k] for m in maps],
                                 dataclasses.replace(events, threshold=t))
            rate = "-" if r["false_per_hour"] is None else f"{r['false_per_hour']:.1f}"
            print(f"{k:>5} {t:>9.4f} {r['found']:>3} of {r['events']:<2} {r['missed']:>6} "
                  f"{r['false']:>5} {rate:>8}", flush=True)


if __name__ == "__main__":
    main()
