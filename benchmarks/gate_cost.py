"""What the normal-memory gate costs at test time: seconds to score one video's cuboid features
(``clip_maps``, CPU) without a gate and with banks of several sizes.

    python benchmarks/gate_cost.py --clips 250 --sizes 1024 4096 16384 --repeat 3

Random features of the shape of a ~2-minute 30 fps video (250 clips x 49 cuboids x 528);
the time does not depend on the values. Prints one line per setting, the best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from stmil.mil.detector import Detector, RunConfig
from stmil.mil.memory import build_memory
from stmil.mil.model import Scorer


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=250)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    feats = np.abs(rng.normal(size=(args.clips, 49, 528))).astype(np.float16)
    torch.manual_seed(0)
    model = Scorer().eval()
    detector = Detector(model, RunConfig(in_dim=528, grid=7, feature_grid=7,
                                         endpoint="Mixed_4e", size=224, clip_len=16, stride=16,
                                         tail="drop", supervision="weak"))
    base = best_time(lambda: detector.maps(feats), args.repeat)
    print(f"torch threads {torch.get_num_threads()}; {args.clips} clips x 49 cuboids x 528")
    print(f"no gate: {base:.3f} s")
    normals = [np.abs(rng.normal(size=(4000, 528))).astype(np.float32) for _ in range(5)]
    for size in args.sizes:
        model.gate = build_memory(normals, size, seed=0)
        t = best_time(lambda: detector.maps(feats), args.repeat)
        print(f"gate memory, bank {size}: {t:.3f} s ({t / base:.1f}x, "
              f"{1000 * (t - base) / args.clips:.1f} ms per clip added)")
        model.gate = None


if __name__ == "__main__":
    main()
