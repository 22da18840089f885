"""What the ownership ledger costs a command that commits many files one by one (extract,
score, import-features): seconds to :func:`stmil.ownership.commit` N small files into one
folder, one commit each, as the folder fills (the ledger grows with it).

    python benchmarks/ledger_commit.py --n 100 1000 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from stmil.ownership import commit


def commit_n(folder: Path, n: int) -> float:
    """Seconds to commit files ``0000000.json`` ... one per :func:`commit` into ``folder``."""
    t = time.perf_counter()
    for i in range(n):
        dest = folder / f"{i:07d}.json"
        commit(folder, [(dest, lambda tmp, i=i: tmp.write_text(f'{{"i": {i}}}\n'))], "bench")
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--dir", default=None, help="where the folders go (default: a temp dir)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        for n in args.n:
            folder = Path(root, f"n{n}")
            folder.mkdir()
            s = commit_n(folder, n)
            print(f"N={n:>6}: {s:8.2f} s, {1000 * s / n:7.2f} ms per commit", flush=True)


if __name__ == "__main__":
    main()
