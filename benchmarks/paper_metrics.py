"""Time the paper metrics (issue 12) at UCF-Crime test-set size, with the real annotations.

The 290 test videos of ``Anomaly_Test.txt`` with their real temporal annotation and Liu and
Ma's 3,102 real boxes (``Test_annotation.pkl``), read by stmil's loaders from
``../shared/data/ucf-crime-meta``; random 7x7 maps stand in for a model (there are no UCF-Crime
videos here), every video ``--frames`` frames long (UCF-Crime's test set: about 1.1 M frames,
3,800 a video; longer where the annotation needs it). Prints the time of each step and the
metrics (chance level, as the maps are random).

    python benchmarks/paper_metrics.py [--meta DIR] [--frames 3840] [--interpolate]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from stmil.datasets import fit_to_video
from stmil.datasets.liu_ma import attach_liu_ma, read_liu_ma
from stmil.datasets.ucf_crime import load_ucf_crime
from stmil.evaluation.paper_metrics import paper_metrics
from stmil.features.store import FeatureMeta, VideoFeatures
from stmil.timeline import frame_labels, frame_scores_from_clips

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meta", type=Path, default=ROOT.parent / "shared/data/ucf-crime-meta")
    ap.add_argument("--frames", type=int, default=3840, help="frames per video")
    ap.add_argument("--interpolate", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # intervals cut at --frames are expected here
    t0 = time.perf_counter()
    records = load_ucf_crime(args.meta, "test")
    boxes = read_liu_ma(args.meta / "Test_annotation.pkl")
    rng = np.random.default_rng(args.seed)
    videos, maps = [], []
    for rec in records:
        rows = boxes.get(rec.video_id, [])
        # At least --frames, and long enough for its annotation and boxes; whole clips.
        n = max([args.frames] + [e for _, e in rec.intervals] + [f + 1 for f, _ in rows])
        clips = -(-n // 16)
        n = clips * 16
        meta = FeatureMeta(n_clips=clips, clip_len=16, stride=16, fps=30.0, source_fps=30.0,
                           n_frames=n, width=320, height=240, grid=7, size=224,
                           endpoint="Mixed_4e", tail="drop", channels=1)
        rec = attach_liu_ma(rec, boxes.get(rec.video_id), 320, 240, n,
                            str(args.meta / "Test_annotation.pkl"), args.interpolate)
        rec = fit_to_video(rec, 320, 240, n)
        videos.append(VideoFeatures(rec, np.zeros((clips, 49, 1), np.float16), meta))
        maps.append(rng.uniform(size=(clips, 49)).astype(np.float32))
    t1 = time.perf_counter()
    fs = [frame_scores_from_clips(m.max(axis=1), v.clip_ranges, v.meta.n_frames)
          for v, m in zip(videos, maps)]
    fl = [frame_labels(list(v.record.intervals), v.meta.n_frames) for v in videos]
    t2 = time.perf_counter()
    out = paper_metrics(videos, maps, fs, fl)
    t3 = time.perf_counter()
    n_boxed = sum(len(v.record.boxes) for v in videos)
    total = sum(v.meta.n_frames for v in videos)
    print(f"{len(videos)} videos, {total:,} frames, "
          f"{n_boxed:,} frames with a box (interpolate={args.interpolate})")
    print(f"load {t1 - t0:.2f}s, frame scores {t2 - t1:.2f}s, paper metrics {t3 - t2:.2f}s")
    for k, v in out.items():
        print(f"  {k:22s} {v:.4f}")


if __name__ == "__main__":
    main()
