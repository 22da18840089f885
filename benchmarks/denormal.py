"""Print how much slower a CPU matmul gets when the weights hold denormal floats.

Adagrad's weight decay shrinks the weights of dead ReLU units geometrically into denormal
float32 values (below 1.18e-38); ``stmil.mil.train`` zeroes them after every step
(``stmil.mil.model.flush_denormals``). This times the scorer's first layer, ``x @ W.T`` with
``x`` of ``--rows`` instances x 528 and ``W`` 512 x 528, for three weight matrices: normal
values; the same with ``--dead`` of the rows (dead units) set to denormal values; and those
rows zeroed as ``train()`` does. Median of ``--repeat`` calls after one warm-up. A few seconds::

    .venv/bin/python benchmarks/denormal.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_ms(x: torch.Tensor, w: torch.Tensor, repeat: int) -> float:
    """Median wall time of ``x @ w.T`` in milliseconds."""
    x @ w.T  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        x @ w.T
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4096, help="instances per matmul (default 4096)")
    p.add_argument("--dead", type=float, default=0.5, help="fraction of denormal weight rows")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.rows, 528, generator=g)
    normal = torch.randn(512, 528, generator=g) * 0.05
    dead = torch.rand(512, generator=g) < args.dead
    denormal = normal.clone()
    denormal[dead] = normal[dead] * 1e-38  # below torch.finfo(float32).tiny = 1.18e-38
    flushed = denormal.masked_fill(denormal.abs() < torch.finfo(torch.float32).tiny, 0.0)
    n_den = int(((denormal != 0) & (denormal.abs() < torch.finfo(torch.float32).tiny)).sum())
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} x {tuple(x.shape)} "
          f"@ W.T, W (512, 528), {int(dead.sum())} dead rows, {n_den} denormal weights")
    rows = [("normal weights", normal), ("dead rows denormal", denormal),
            ("dead rows zeroed (train's flush)", flushed)]
    base = None
    for name, w in rows:
        ms = median_ms(x, w, args.repeat)
        base = base or ms
        print(f"{name:<34} {ms:8.1f} ms  ({ms / base:.1f}x normal)", flush=True)


if __name__ == "__main__":
    main()
