"""Model-only I3D throughput at an endpoint (default Mixed_4e), 16x224x224 clips.

Each row runs one setting of the network on a batch of clips that is already on the device
(no decoding, no resizing, no cuboid pooling): ``warmup`` untimed calls, then ``repeat`` timed
calls; clips/s is the batch size over the median call time. The relative L2 error of each
setting's output is measured against the stmil model in fp32 (contiguous layout, TF32 off) on
the same device and the same clips. Those clips are REAL frames: consecutive 16-frame clips cut
from ``data/vtest.avi`` by :func:`stmil.features.video.iter_clips` (repeated when the batch is
bigger than
the video), or uniform random clips in [-1, 1] when that file is missing.

Settings (``--settings`` picks a comma-separated subset by key):

- ``naive``: ``benchmarks/naive_i3d.py`` (Conv3d + BatchNorm3d per unit, unfused 1x1 branches,
  ``F.pad`` on every call), fp32, contiguous. The speed-up column is relative to
  it.
- ``fp32``: :func:`stmil.features.weights.load_i3d` (BatchNorm folded, fused 1x1 convolutions),
  fp32,
  contiguous.
- ``fp32-cl``: the same with ``channels_last_3d`` model and input (what
  :class:`stmil.features.extract.FeatureExtractor` uses on CPU).
- ``bf16``: ``torch.autocast`` to bfloat16 (``cpu`` or ``cuda``), contiguous.
- ``bf16-cl``: bfloat16 autocast with ``channels_last_3d``.
- CUDA only: ``tf32`` (TF32 convolutions and matmuls, contiguous), ``tf32-bench`` (the same with
  ``cudnn.benchmark``) and ``bf16-cl-bench`` (bf16 autocast, channels_last_3d,
  ``cudnn.benchmark``). The fp32 rows on CUDA switch TF32 off: PyTorch allows TF32 in cuDNN
  convolutions by default, which would make "fp32" silently TF32.
- ``--compile`` adds ``bf16-cl-compile``: ``torch.compile`` of the bf16 channels_last_3d model
  (with ``cudnn.benchmark`` on CUDA). Compilation happens during warm-up and is not timed.

Reproduce the README numbers (CPU: 1 and 8 clips a batch; GPU: 8 and 64)::

    STMIL_CACHE=/tmp/stmilcache .venv/bin/python benchmarks/extract_model.py --device cpu \\
        --batch 1 8 --warmup 1 --repeat 3 --json benchmarks/extract_model_cpu.json
    STMIL_CACHE=/tmp/stmilcache .venv/bin/python benchmarks/extract_model.py --device cuda \\
        --batch 8 64 --warmup 3 --repeat 10 --compile --json benchmarks/extract_model_cuda.json

Smoke test (tiny input, seconds)::

    .venv/bin/python benchmarks/extract_model.py --size 64 --batch 1 --warmup 0 --repeat 1
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from naive_i3d import build_naive, rel_l2  # noqa: E402

from stmil.features.i3d import ENDPOINTS  # noqa: E402
from stmil.features.video import iter_clips  # noqa: E402
from stmil.features.weights import load_i3d  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CL = torch.channels_last_3d


@dataclass(frozen=True)
class Setting:
    key: str
    name: str
    naive: bool = False
    channels_last: bool = False
    bf16: bool = False
    tf32: bool = False
    benchmark: bool = False
    compile: bool = False
    cuda_only: bool = False


SETTINGS = (
    Setting("naive", "naive fp32", naive=True),
    Setting("fp32", "stmil fp32"),
    Setting("fp32-cl", "stmil fp32 channels_last_3d", channels_last=True),
    Setting("bf16", "stmil bf16 autocast", bf16=True),
    Setting("bf16-cl", "stmil bf16 channels_last_3d", channels_last=True, bf16=True),
    Setting("tf32", "stmil tf32", tf32=True, cuda_only=True),
    Setting("tf32-bench", "stmil tf32 cudnn.benchmark", tf32=True, benchmark=True,
            cuda_only=True),
    Setting("bf16-cl-bench", "stmil bf16 channels_last_3d cudnn.benchmark", channels_last=True,
            bf16=True, benchmark=True, cuda_only=True),
)
COMPILE = Setting("bf16-cl-compile", "stmil bf16 channels_last_3d compile", channels_last=True,
                  bf16=True, compile=True)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def real_clips(video: Path, n: int, frames: int, size: int) -> tuple[torch.Tensor, str]:
    """``(n, 3, frames, size, size)`` clips cut from ``video`` (tiled if short), else random."""
    if video.is_file():
        got = []
        for batch in iter_clips(video, frames, frames, size, batch_size=n):
            got.append(batch.clips)
            if sum(len(c) for c in got) >= n:
                break
        clips = torch.cat(got)
        reps = -(-n // len(clips))
        return clips.repeat(reps, 1, 1, 1, 1)[:n].contiguous(), f"{video.name} (real frames)"
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, frames, size, size, generator=gen) * 2 - 1, "random (no video)"


def set_flags(device: torch.device, s: Setting) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = s.tf32
        torch.backends.cuda.matmul.allow_tf32 = s.tf32
        torch.backends.cudnn.benchmark = s.benchmark


def make_model(base: nn.Module, s: Setting, device: torch.device) -> nn.Module:
    model = copy.deepcopy(base).to(device)
    if s.channels_last:
        model = model.to(memory_format=CL)
    if s.compile:
        model = torch.compile(model)
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_setting(model: nn.Module, x: torch.Tensor, s: Setting, device: torch.device,
                warmup: int, repeat: int) -> tuple[list[float], torch.Tensor]:
    """Times of ``repeat`` calls (after ``warmup``) and the last output, as float32 on CPU."""
    x = x.to(device)
    if s.channels_last:
        x = x.contiguous(memory_format=CL)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if s.bf16
           else contextlib.nullcontext())
    times: list[float] = []
    with torch.inference_mode(), amp:
        for _ in range(warmup):
            model(x)
        sync(device)
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = model(x)
            sync(device)
            times.append(time.perf_counter() - t0)
    return times, out.float().cpu()


def reference(base: nn.Module, clips: torch.Tensor, chunk: int, device: torch.device):
    """stmil fp32 output (contiguous, TF32 off) of every clip, computed ``chunk`` at a time."""
    ref = Setting("ref", "reference")
    set_flags(device, ref)
    model = make_model(base, ref, device)
    with torch.inference_mode():
        out = torch.cat([model(c.to(device)).float().cpu() for c in clips.split(chunk)])
    del model
    return out


def markdown(rows: list[dict]) -> str:
    naive = {r["batch"]: r["clips_per_s"] for r in rows if r["key"] == "naive"}
    lines = ["| setting | batch | clips/s | s/clip | rel err | speed-up vs naive |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = naive.get(r["batch"])
        speed = f"{r['clips_per_s'] / base:.2f}x" if base else "n/a"
        lines.append(f"| {r['setting']} | {r['batch']} | {r['clips_per_s']:.3f} | "
                     f"{r['s_per_clip']:.3f} | {r['rel_err']:.1e} | {speed} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Model-only I3D throughput and accuracy, per setting.",
        epilog="example: extract_model.py --device cpu --batch 1 8 --repeat 3",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--endpoint", default="Mixed_4e", choices=ENDPOINTS[:-1])
    p.add_argument("--batch", type=int, nargs="+",
                   help="batch sizes (default: 1 8 on CPU, 8 64 on CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per row (default: 1 on CPU, 3 on CUDA)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per row (median reported)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--size", type=int, default=224, help="clip height = width (default 224)")
    p.add_argument("--video", type=Path, default=REPO / "data" / "vtest.avi",
                   help="real footage for the clips (default data/vtest.avi)")
    p.add_argument("--settings", default="",
                   help="comma-separated keys: " + ",".join(s.key for s in SETTINGS)
                   + " (default: all for the device)")
    p.add_argument("--compile", action="store_true", help="add a torch.compile row")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batch or ([1, 8] if device.type == "cpu" else [8, 64])
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cpu" else 3)
    settings = [s for s in SETTINGS if device.type == "cuda" or not s.cuda_only]
    if args.settings:
        keys = args.settings.split(",")
        unknown = set(keys) - {s.key for s in SETTINGS} - {COMPILE.key}
        if unknown:
            raise SystemExit(f"unknown settings: {', '.join(sorted(unknown))}")
        settings = [s for s in settings if s.key in keys]
    if args.compile:
        settings.append(COMPILE if device.type == "cpu" else
                        Setting(**{**asdict(COMPILE), "benchmark": True,
                                   "name": COMPILE.name + " cudnn.benchmark"}))

    clips, source = real_clips(args.video, max(batches), args.frames, args.size)
    info = {
        "torch": torch.__version__,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "endpoint": args.endpoint,
        "clip": [3, args.frames, args.size, args.size],
        "input": source,
        "warmup": warmup,
        "repeat": args.repeat,
    }
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)

    stmil_base = load_i3d(args.endpoint)
    naive_base = build_naive(args.endpoint) if any(s.naive for s in settings) else None
    ref = reference(stmil_base, clips, min(batches), device)
    rows = []
    for s in settings:
        set_flags(device, s)
        model = make_model(naive_base if s.naive else stmil_base, s, device)
        for b in batches:
            times, out = run_setting(model, clips[:b], s, device, warmup, args.repeat)
            t = statistics.median(times)
            row = {"key": s.key, "setting": s.name, "batch": b, "clips_per_s": b / t,
                   "s_per_clip": t / b, "rel_err": rel_l2(out, ref[:b]), "times_s": times}
            rows.append(row)
            print(f"{s.name:<45} batch {b:>3}: {row['clips_per_s']:8.3f} clips/s, "
                  f"rel err {row['rel_err']:.1e}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
