"""What the motion prior adds to extraction: seconds per batch of clips for
:func:`stmil.features.motion.motion_energy` on model input ``(B, 3, 16, 224, 224)``.

    python benchmarks/motion_cost.py --batch 8 --repeat 5
"""

from __future__ import annotations

import argparse
import time

import torch

from stmil.features.motion import motion_energy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 3, 16, 224, 224) * 2 - 1
    motion_energy(x, 7)  # warm-up
    t = time.perf_counter()
    for _ in range(args.repeat):
        motion_energy(x, 7)
    per = (time.perf_counter() - t) / args.repeat
    print(f"motion energy: {per:.3f} s per batch of {args.batch} clips "
          f"({1000 * per / args.batch:.1f} ms per clip), {args.threads} threads")


if __name__ == "__main__":
    main()
