"""Seconds per MIL training run at UCF-Crime size, on synthetic bags.

UCF-Crime's training split has 1610 videos (810 anomalous, 800 normal). Each bag is 32 segments
x 49 cuboids x 528 channels; a batch holds 30 anomalous and 30 normal bags, i.e. 94,080
instances through the 528 -> 512 -> 32 -> 1 scorer, and a run is 3000 iterations. Reported:
seconds per iteration (median over the timed iterations) and that times 3000.

Two modes (``--mode``, either or both):

- ``loop`` (default): the inner loop of :func:`stmil.mil.train.train`, step for step: the same
  sampling (``rng.choice`` without replacement), the batch gathered by
  :class:`stmil.mil.bags.BagStore` as ``train()`` does: from the bags held on the device
  (float16, ``resident``, forced here whatever their size; train() holds them when they fit
  its budget) and from the memory-mapped float16 ``bags.npy`` (``memmap``, the fallback)
  (``--bags-from``; peak RSS is the process's, so run one source per process to compare it),
  :class:`stmil.mil.model.Scorer`, :func:`stmil.mil.model.mil_ranking_loss` and
  Adagrad with ``train()``'s defaults (lr, weight decay, lambdas, dropout are read from
  :data:`stmil.mil.train.TRAIN_DEFAULTS`). The bags file is written directly (L2-normalised random
  instances). Each iteration is split into gather (memmap read + float32 conversion), forward
  (+ loss) and backward (+ optimiser step). ``--bf16`` adds a row with the scorer's forward under
  ``torch.autocast(bfloat16)`` (CPU: AMX/AVX-512 BF16 where present); the loss is computed in
  float32.
- ``train``: calls :func:`stmil.mil.train.train` itself on synthetic feature files in the real
  format (``<id>.npy`` float16 ``(clips, 49, 528)`` + ``<id>.json``) with a UCF-Crime
  ``Anomaly_Train.txt`` list. ``train()`` builds its memory-mapped bags, which this script
  confirms by wrapping ``build_bag_cache`` as :mod:`stmil.mil.train` calls it. The reported
  s/iteration is ``train()``'s own loop time over its iterations (no warm-up); set-up (feature
  checks, bag building) is reported apart. With ``--bf16`` the whole call runs under
  ``torch.autocast`` (the loss too).
  At full size the feature files take 1610 x 1.6 MB = 2.6 GB and ``train()``'s bags another
  2.6 GB on disk (``--clips-per-video 32``; real UCF-Crime videos have ~450 clips, which only
  changes the one-off bag building, not the per-iteration cost). Use small ``--bags`` for smoke
  tests.

Reproduce the README numbers::

    .venv/bin/python benchmarks/train.py --mode loop train --bags 1610 --anomalous 810 \\
        --batch 30 --iterations 30 --bf16 --json benchmarks/train_cpu.json

Smoke test::

    .venv/bin/python benchmarks/train.py --mode loop train --bags 8 --anomalous 4 --batch 2 \\
        --iterations 2 --warmup 1 --bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import stmil.mil.train as stmil_train
from stmil.features.weights import KINETICS400_RGB
from stmil.mil.bags import BagStore
from stmil.mil.model import Scorer, mil_ranking_loss
from stmil.mil.train import TRAIN_DEFAULTS

D = TRAIN_DEFAULTS
RUN_ITERATIONS = 3000


def step_gflop(args: argparse.Namespace) -> float:
    """Scorer matmul FLOP of one iteration (2 per multiply-add) over every instance of the
    batch's 2 x ``batch`` bags: the forward pass, the weight gradients of all three linear
    layers (as many multiply-adds again) and the input gradients of the second and third (the
    bags need none). Elementwise work (ReLU, dropout, sigmoid, loss, Adagrad) is left out."""
    instances = 2 * args.batch * args.segments * args.grid ** 2
    layers = [args.channels * D["hidden"], D["hidden"] * D["mid"], D["mid"]]
    macs = 2 * sum(layers) + sum(layers[1:])
    return 2 * macs * instances / 1e9


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def autocast(dev: torch.device, bf16: bool):
    return torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def random_instances(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """L2-normalised random vectors along the last axis, float16."""
    x = rng.standard_normal(shape, dtype=np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x.astype(np.float16)


def write_bags(path: Path, n_bags: int, segments: int, cuboids: int, channels: int) -> np.ndarray:
    """A ``(n_bags, S, N, C)`` float16 ``.npy`` written in chunks, reopened memory-mapped."""
    bags = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16,
                                     shape=(n_bags, segments, cuboids, channels))
    rng = np.random.default_rng(0)
    for i in range(0, n_bags, 16):
        bags[i:i + 16] = random_instances(rng, bags[i:i + 16].shape)
    bags.flush()
    del bags
    return np.load(path, mmap_mode="r")


def run_loop(store: BagStore, n_anom: int, args: argparse.Namespace, dev: torch.device,
             bf16: bool) -> dict:
    """``train()``'s inner loop; per-iteration times of each part (timed iterations only)."""
    bags = store.bags
    anom, norm = np.arange(n_anom), np.arange(n_anom, len(bags))
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = Scorer(bags.shape[-1], D["hidden"], D["mid"], D["dropout"]).to(dev)
    optim = torch.optim.Adagrad(model.parameters(), lr=D["lr"], weight_decay=D["weight_decay"])
    parts: dict[str, list[float]] = {"gather": [], "forward": [], "backward": [], "total": []}
    model.train()
    for it in range(args.warmup + args.iterations):
        t0 = time.perf_counter()
        a = rng.choice(anom, size=min(args.batch, len(anom)), replace=False)
        n = rng.choice(norm, size=min(args.batch, len(norm)), replace=False)
        idx = np.concatenate([a, n])
        x = store.gather(idx)  # train()'s gather: on the device, or from the memmap
        sync(dev)
        t1 = time.perf_counter()
        with autocast(dev, bf16):
            scores = model(x)
        scores = scores.float()
        loss, terms = mil_ranking_loss(scores[: len(a)], scores[len(a):], D["lambda1"],
                                       D["lambda2"])
        sync(dev)
        t2 = time.perf_counter()
        optim.zero_grad()
        loss.backward()
        optim.step()
        _ = loss.item(), {k: v.item() for k, v in terms.items()}  # train() logs these
        t3 = time.perf_counter()
        if it >= args.warmup:
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                parts[k].append(v)
    return {k: statistics.median(v) for k, v in parts.items()}


def write_dataset(root: Path, n_bags: int, n_anom: int, clips: int, grid: int,
                  channels: int) -> tuple[Path, Path]:
    """UCF-Crime ``Anomaly_Train.txt`` + real-format feature files; returns (data, features)."""
    data, feats = root / "data", root / "features"
    data.mkdir(parents=True, exist_ok=True)
    feats.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = []
    for i in range(n_bags):
        if i < n_anom:
            vid, line = f"Anomaly{i:04d}_x264", f"Anomaly/Anomaly{i:04d}_x264.mp4"
        else:
            vid = f"Normal_Videos{i:04d}_x264"
            line = f"Training_Normal_Videos_Anomaly/{vid}.mp4"
        lines.append(line)
        np.save(feats / f"{vid}.npy", random_instances(rng, (clips, grid * grid, channels)))
        meta = {"fps": 30.0, "source_fps": 30.0, "n_frames": clips * 16, "width": 320,
                "height": 240, "clip_len": 16, "stride": 16, "size": 224, "grid": grid,
                "endpoint": "Mixed_4e", "tail": "drop", "n_clips": clips, "channels": channels,
                "dtype": "float16", "weights": KINETICS400_RGB.name,
                "weights_sha256": KINETICS400_RGB.sha256}
        (feats / f"{vid}.json").write_text(json.dumps(meta))
    (data / "Anomaly_Train.txt").write_text("\n".join(lines) + "\n")
    return data, feats


def run_train(data: Path, feats: Path, out: Path, args: argparse.Namespace, bf16: bool) -> dict:
    """Call ``stmil.mil.train.train``; record what ``build_bag_cache`` returned and how long it
    took."""
    seen: dict = {}
    original = stmil_train.build_bag_cache

    def spy(*a, **kw):
        t0 = time.perf_counter()
        bags = original(*a, **kw)
        seen.update(bags_type=type(bags).__name__, bags_file=str(getattr(bags, "filename", "")),
                    bags_shape=list(bags.shape), bags_dtype=str(bags.dtype),
                    build_s=time.perf_counter() - t0)
        return bags

    stmil_train.build_bag_cache = spy
    try:
        t0 = time.perf_counter()
        with autocast(torch.device(args.device), bf16):
            summary = stmil_train.train(
                data, feats, out, format="ucf_crime", iterations=args.iterations,
                batch_anomalous=args.batch, batch_normal=args.batch, device=args.device,
                progress=False)
        total = time.perf_counter() - t0
    finally:
        stmil_train.build_bag_cache = original
    return {"total": summary.seconds / summary.iterations, "setup_s":
            total - summary.seconds, **seen}


def markdown(rows: list[dict]) -> str:
    lines = ["| mode | precision | bags | batch | s/iteration | gather | forward | backward | "
             f"{RUN_ITERATIONS} iterations (s) | bags source |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ms = [f"{1000 * r[k]:.0f} ms" if k in r else "-" for k in ("gather", "forward",
                                                                     "backward")]
        lines.append(f"| {r['mode']} | {r['precision']} | {r['bags']} | {r['batch']}+"
                     f"{r['batch']} | {r['total']:.3f} | {' | '.join(ms)} | "
                     f"{r['total'] * RUN_ITERATIONS:.0f} | {r['source']} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training speed at UCF-Crime size on synthetic bags.",
        epilog="example: train.py --bags 1610 --anomalous 810 --iterations 30 --bf16",
    )
    p.add_argument("--mode", nargs="+", choices=("loop", "train"), default=["loop"])
    p.add_argument("--bags", type=int, default=1610, help="videos (default 1610, UCF-Crime)")
    p.add_argument("--anomalous", type=int, default=810, help="anomalous videos (default 810)")
    p.add_argument("--batch", type=int, default=30, help="bags of each class per batch")
    p.add_argument("--iterations", type=int, default=30, help="timed iterations")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (loop mode)")
    p.add_argument("--segments", type=int, default=32)
    p.add_argument("--grid", type=int, default=7, help="cuboids per bag segment = grid^2")
    p.add_argument("--channels", type=int, default=528)
    p.add_argument("--clips-per-video", type=int, default=32, help="train mode: clips per video")
    p.add_argument("--bf16", action="store_true", help="add bfloat16 autocast rows")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--bags-from", nargs="+", choices=("memmap", "resident"),
                   default=["memmap", "resident"],
                   help="loop mode: gather batches from the memmap, from bags held on the "
                        "device (forced; train() holds them when they fit), or both (default)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if not 0 < args.anomalous < args.bags:
        p.error("--anomalous must be between 1 and --bags - 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    precisions = ["fp32", "bf16"] if args.bf16 else ["fp32"]
    n_norm = args.bags - args.anomalous
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} device={dev} "
          f"bags={args.anomalous}+{n_norm} instances/bag={args.segments}x{args.grid ** 2}x"
          f"{args.channels} lr={D['lr']} weight_decay={D['weight_decay']}", flush=True)
    print(f"scorer FLOP per iteration: {step_gflop(args):.0f} GFLOP", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="stmil-train-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = {"bags": args.bags, "batch": args.batch}
        if "loop" in args.mode:
            t0 = time.perf_counter()
            bags = write_bags(work / "bags.npy", args.bags, args.segments, args.grid ** 2,
                              args.channels)
            print(f"loop: wrote {bags.nbytes / 2**30:.2f} GiB bags in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            for where in args.bags_from:
                t0 = time.perf_counter()
                store = BagStore(bags, dev, max_bytes=0 if where == "memmap" else 1 << 62)
                src = (f"held on {dev} ({time.perf_counter() - t0:.1f} s to load)"
                       if store.resident else f"memmap {Path(bags.filename).name}")
                for prec in precisions:
                    r = run_loop(store, args.anomalous, args, dev, prec == "bf16")
                    r["peak_rss_mb"] = peak_rss_mb()
                    rows.append({"mode": "loop", "precision": prec, "source": src, **base, **r})
                    print(f"loop {prec}, bags {src}: {r['total']:.3f} s/iteration "
                          f"(gather {1000 * r['gather']:.0f} ms); peak RSS "
                          f"{r['peak_rss_mb']:.0f} MiB", flush=True)
                del store
            del bags
            (work / "bags.npy").unlink()
        if "train" in args.mode:
            t0 = time.perf_counter()
            data, feats = write_dataset(work / "ucf", args.bags, args.anomalous,
                                        args.clips_per_video, args.grid, args.channels)
            print(f"train: wrote {args.bags} feature files in {time.perf_counter() - t0:.1f} s",
                  flush=True)
            for prec in precisions:
                r = run_train(data, feats, work / f"run-{prec}", args, prec == "bf16")
                src = f"{r['bags_type']} {Path(r['bags_file']).name}"
                rows.append({"mode": "train()", "precision": prec, "source": src, **base, **r})
                print(f"train() {prec}: {r['total']:.3f} s/iteration; set-up "
                      f"{r['setup_s']:.1f} s (bags built in {r['build_s']:.1f} s: "
                      f"{r['bags_type']} {r['bags_shape']} {r['bags_dtype']} at "
                      f"{r['bags_file']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "device": str(dev),
                                         "threads": torch.get_num_threads(), "rows": rows},
                                        indent=1) + "\n")
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
