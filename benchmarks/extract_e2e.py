"""End-to-end feature extraction from video files: throughput, stage breakdown and memory.

Runs the real path, :func:`stmil.features.extract.extract_video` then
:func:`stmil.features.store.write_features`
for every video, and reports clips/s and the real-time factor (seconds of video per second of
wall time). Then each stage runs alone over the same videos:

- decode+convert: :func:`stmil.features.video.iter_frames` (PyAV decode and conversion to RGB24);
- resize/normalise: :func:`stmil.features.video.to_model_input` on every frame, one at a time as
  ``iter_clips`` calls it (frames are decoded untimed; only the calls are
  timed);
- clips: :func:`stmil.features.video.iter_clips`, i.e. decode + resize + clip assembly, the whole
input
  side of the pipeline;
- model: :class:`stmil.features.extract.FeatureExtractor` (I3D + cuboid pooling) on batches of the
  same
  sizes the videos produce. The batches hold real clips cut from the first video; the network's
  cost does not depend on pixel values;
- write: :func:`stmil.features.store.write_features` (``np.save`` + JSON, atomic) of each video's
  features.

Before anything is timed, the model is called once with every batch size the videos will
produce (``--warmup``): setting up kernels for a new input shape is a one-off cost per process.
The full pipeline runs first; the stages follow in the order listed.

Peak RSS (``ru_maxrss``) is read after the full pipeline, which runs first in the process. With
``--long`` two longer videos (default 30 s and 120 s at 320x240) are generated and each is
extracted in its own subprocess, so the two peaks are separate: bounded-memory streaming keeps
them about equal.

Synthetic videos (``--generate N``) look roughly like UCF-Crime: 320x240, 30 fps, H.264
(libx264 through PyAV), a textured static background, several moving people-sized blobs and
sensor noise. They are written by a subprocess so that encoding does not count in the peak RSS.

With ``--compare`` the script instead times :func:`stmil.features.extract.extract_many` (the
path ``stmil extract`` runs: decode, resize, model, atomic writes) over the same videos for each
``--precisions`` x ``--workers`` x ``--batches`` combination, in one process, in an
interleaved order repeated ``--repeat`` times (the best of the repeats is reported, so a burst
of load from other processes on a shared machine hurts less), plus the model alone on the
batches those videos produce (per-video batches). Each row gives s/clip and the relative L2
error of its features against the first serial fp32 run's (``0`` means bitwise equal)::

    .venv/bin/python benchmarks/extract_e2e.py --compare --generate 4 --seconds 10 \
        --precisions fp32 bf16 --workers 0 2 --repeat 2

Reproduce the README numbers::

    STMIL_CACHE=/tmp/stmilcache .venv/bin/python benchmarks/extract_e2e.py --generate 4 \\
        --seconds 10 --long --json benchmarks/extract_e2e_cpu.json

Smoke test (tiny, seconds)::

    .venv/bin/python benchmarks/extract_e2e.py --generate 1 --seconds 2 --size 64 --long \\
        --long-seconds 2 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stmil.device import resolve_device
from stmil.features.extract import (
    ExtractSettings,
    FeatureExtractor,
    expand_inputs,
    extract_video,
    write_features,
)
from stmil.features.pipeline_config import model_batch
from stmil.features.video import iter_clips, iter_frames, probe, to_model_input
from stmil.synth.write import VideoWriter

WIDTH, HEIGHT, FPS = 320, 240, 30


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- synthetic footage -------------------------------------------------------------------------


def _background(rng: np.random.Generator) -> np.ndarray:
    """A static street-like scene: smooth greyish field + texture + a few flat 'buildings'."""
    grey = rng.uniform(60, 190, size=(1, 1, 6, 8))
    tint = rng.uniform(-15, 15, size=(1, 3, 6, 8))
    coarse = torch.from_numpy(grey + tint)  # (1, 3, 6, 8): smooth, mostly grey colour field
    bg = F.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=True)
    bg = bg[0].permute(1, 2, 0).numpy() + rng.normal(0, 12, size=(HEIGHT, WIDTH, 3))
    for _ in range(4):
        x, y = rng.integers(0, WIDTH - 60), rng.integers(0, HEIGHT // 2)
        bg[y:y + rng.integers(30, 90), x:x + rng.integers(30, 80)] = rng.uniform(30, 220, 3)
    return np.clip(bg, 0, 255).astype(np.float32)


def generate_video(path: Path, seconds: float, seed: int) -> None:
    """Write one 320x240, 30 fps H.264 video with moving blobs over a textured background."""
    rng = np.random.default_rng(seed)
    bg = _background(rng)
    n_obj = int(rng.integers(3, 7))
    pos = rng.uniform([0, HEIGHT * 0.3], [WIDTH, HEIGHT * 0.9], size=(n_obj, 2))
    vel = rng.uniform(-3, 3, size=(n_obj, 2)) * [1.0, 0.3]
    size = rng.integers([8, 20], [20, 50], size=(n_obj, 2))  # (w, h), people-sized
    colour = rng.uniform(0, 255, size=(n_obj, 3))
    with VideoWriter(path, WIDTH, HEIGHT, Fraction(FPS)) as writer:
        for t in range(int(round(seconds * FPS))):
            frame = bg * (1 + 0.03 * np.sin(t / 45))  # slow lighting drift
            for (x, y), (w, h), c in zip(pos + vel * t, size, colour):
                x, y = int(x) % WIDTH, int(y) % HEIGHT
                frame[y:y + h, x:x + w] = c
            frame += rng.normal(0, 4, size=frame.shape)  # sensor noise
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))


def generate(folder: Path, seconds: list[float], prefix: str = "synth") -> list[Path]:
    """Generate one video per entry of ``seconds`` in a subprocess; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}_{i:03d}_{s:g}s.mp4" for i, s in enumerate(seconds)]
    cmd = [sys.executable, __file__, "--generate-only", str(folder), "--prefix", prefix,
           "--lengths", *map(str, seconds)]
    subprocess.run(cmd, check=True)
    return paths


# --- stages ------------------------------------------------------------------------------------


def stage_decode(videos: list[Path]) -> tuple[float, int]:
    t0, n = time.perf_counter(), 0
    for v in videos:
        for _ in iter_frames(v):
            n += 1
    return time.perf_counter() - t0, n


def stage_resize(videos: list[Path], size: int) -> float:
    spent = 0.0
    for v in videos:
        for frame in iter_frames(v):
            t0 = time.perf_counter()
            to_model_input(frame[None], size)
            spent += time.perf_counter() - t0
    return spent


def stage_clips(videos: list[Path], s: ExtractSettings) -> float:
    t0 = time.perf_counter()
    for v in videos:
        for _ in iter_clips(v, s.clip_len, s.stride, s.size, s.fps, s.tail, s.batch_size):
            pass
    return time.perf_counter() - t0


def batch_sizes(counts: list[int], batch: int) -> list[int]:
    """Sizes of the model calls for videos of ``counts`` clips each."""
    return [b for n in counts for b in [batch] * (n // batch) + ([n % batch] if n % batch else [])]


def expected_clips(videos: list[Path], s: ExtractSettings) -> list[int]:
    """Clip counts from the containers' frame counts (tail dropped), for warming up shapes."""
    counts = []
    for v in videos:
        n = probe(v).frames_reported
        counts.append(max(0, (n - s.clip_len) // s.stride + 1) if n >= s.clip_len else 0)
    return counts


def stage_model(extractor: FeatureExtractor, sample: torch.Tensor, counts: list[int],
                batch: int) -> float:
    """Extractor calls with the batch sizes the videos produce (``counts`` clips each)."""
    t0 = time.perf_counter()
    for b in batch_sizes(counts, batch):
        extractor(sample[:b])
    return time.perf_counter() - t0


def stage_write(out: Path, results: list[tuple[str, np.ndarray, dict]]) -> float:
    t0 = time.perf_counter()
    for vid, array, meta in results:
        write_features(out, vid, array, meta)
    return time.perf_counter() - t0


def full_pipeline(videos: list[Path], extractor: FeatureExtractor, s: ExtractSettings,
                  out: Path) -> tuple[float, list[tuple[str, np.ndarray, dict]]]:
    results = []
    t0 = time.perf_counter()
    for v in videos:
        array, meta = extract_video(v, extractor, s)
        write_features(out, v.stem, array, meta)
        results.append((v.stem, array, meta))
    return time.perf_counter() - t0, results


BATCHES = {"auto": None, "per-video": False, "mixed": True}  # --batches -> mix_videos


def compare(videos: list[Path], work: Path, args: argparse.Namespace) -> list[dict]:
    """``extract_many`` s/clip per precision, worker count and batching (best of
    ``--repeat``), the model alone per precision, and each setting's error against the first
    serial fp32 run's."""
    from stmil.features.extract import extract_many
    from stmil.features.pipeline_config import PipelineConfig

    s = ExtractSettings(size=args.size, batch_size=args.batch_size)
    extractors = {p: FeatureExtractor(device=args.device, precision=p)
                  for p in args.precisions}
    first = next(iter_clips(videos[0], s.clip_len, s.stride, s.size, batch_size=s.batch_size))
    sample = first.clips.repeat(-(-s.batch_size // len(first.clips)), 1, 1, 1, 1)
    sample = sample[: s.batch_size]
    counts = expected_clips(videos, s)
    for ex in extractors.values():  # warm-up: every batch size once
        for b in sorted(set(batch_sizes(counts, s.batch_size))):
            ex(sample[:b])
    best: dict[tuple[str, int, str], float] = {}
    model: dict[str, float] = {}
    outputs: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
    n_clips = 0
    for r in range(args.repeat):
        for p, ex in extractors.items():
            t = stage_model(ex, sample, counts, s.batch_size)
            model[p] = min(model.get(p, t), t)
            for w in args.workers:
                for b in args.batches:
                    pipeline = PipelineConfig(workers=w, mix_videos=BATCHES[b])
                    key = (p, w, "mixed" if pipeline.mixes_videos(ex.device.type)
                           else "per video")
                    out = work / f"cmp-{p}-w{w}-{b}-r{r}"
                    t0 = time.perf_counter()
                    summary = extract_many(videos, out, ex, s, progress=False,
                                           pipeline=pipeline)
                    t = time.perf_counter() - t0
                    if summary.failed:
                        raise SystemExit(f"extraction failed: {summary.failed}")
                    n_clips = summary.clips
                    best[key] = min(best.get(key, t), t)
                    outputs[key] = {f.stem: np.load(f).astype(np.float32)
                                    for f in sorted(out.glob("*.npy"))}
                    print(f"repeat {r}: {p} workers={w} batches={key[2]}: {t:.2f} s, "
                          f"{t / n_clips:.3f} s/clip", flush=True)
    ref = next((v for k, v in outputs.items() if k[0] == "fp32" and k[1] == min(args.workers)),
               None)
    rows = []
    for (p, w, b), t in best.items():
        err = None
        if ref is not None:
            num = sum(float(np.sum((outputs[p, w, b][k] - ref[k]) ** 2)) for k in ref)
            den = sum(float(np.sum(ref[k] ** 2)) for k in ref)
            err = (num / den) ** 0.5
        rows.append({"precision": p, "workers": w, "batches": b, "seconds": t, "clips": n_clips,
                     "s_per_clip": t / n_clips, "model_s_per_clip": model[p] / n_clips,
                     "rel_err_vs_fp32_serial": err})
    return rows


def compare_report(rows: list[dict]) -> str:
    lines = ["| precision | workers | batches | end to end s/clip | clips/s | "
             "model alone s/clip | rel. L2 error vs serial fp32 |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        err = "-" if r["rel_err_vs_fp32_serial"] is None else f"{r['rel_err_vs_fp32_serial']:.1e}"
        lines.append(f"| {r['precision']} | {r['workers']} | {r['batches']} | "
                     f"{r['s_per_clip']:.3f} | "
                     f"{1 / r['s_per_clip']:.2f} | {r['model_s_per_clip']:.3f} | {err} |")
    return "\n".join(lines)


def rss_child(video: Path, args: argparse.Namespace) -> None:
    """One video, fresh process: print JSON with the peak RSS before and after extraction."""
    extractor = FeatureExtractor(device=args.device)
    s = ExtractSettings(size=args.size, batch_size=args.batch_size)
    before = peak_rss_mb()
    t0 = time.perf_counter()
    array, meta = extract_video(video, extractor, s)
    print(json.dumps({"video_s": meta.n_frames / meta.source_fps, "clips": len(array),
                      "wall_s": time.perf_counter() - t0, "rss_model_mb": before,
                      "rss_peak_mb": peak_rss_mb()}))


def long_check(folder: Path, args: argparse.Namespace) -> list[dict]:
    paths = generate(folder, args.long_seconds, prefix="long")
    rows = []
    for p in paths:
        cmd = [sys.executable, __file__, "--rss-child", str(p), "--device", args.device,
               "--size", str(args.size), "--batch-size", str(args.batch_size)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"long: {row['video_s']:.0f} s video, {row['clips']} clips, "
              f"peak RSS {row['rss_peak_mb']:.0f} MiB", flush=True)
    return rows


# --- report ------------------------------------------------------------------------------------


def report(stages: dict[str, float], clips: int, frames: int, video_s: float, rss: dict,
           long_rows: list[dict]) -> str:
    full = stages["full pipeline"]
    lines = ["| stage | wall s | clips/s | frames/s | x real time | share of full |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, sec in stages.items():
        lines.append(f"| {name} | {sec:.2f} | {clips / sec:.2f} | {frames / sec:.1f} | "
                     f"{video_s / sec:.2f} | {100 * sec / full:.0f}% |")
    lines += ["", f"{clips} clips, {frames} frames, {video_s:.1f} s of video; peak RSS "
              f"{rss['model']:.0f} MiB after loading the model, {rss['full']:.0f} MiB after "
              "the full pipeline"]
    if long_rows:
        lines += ["", "| video length s | clips | wall s | RSS after model MiB | peak RSS MiB |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['video_s']:.0f} | {r['clips']} | {r['wall_s']:.1f} | "
                  f"{r['rss_model_mb']:.0f} | {r['rss_peak_mb']:.0f} |" for r in long_rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="End-to-end extraction benchmark: clips/s, real-time factor, stages, RSS.",
        epilog="example: extract_e2e.py --generate 4 --seconds 10 --long",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--videos", type=Path, help="folder of videos to extract")
    src.add_argument("--generate", type=int, default=0, metavar="N",
                     help="generate N synthetic 320x240 30 fps H.264 videos (default 4)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of generated videos")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where generated videos and features go (default: a temp folder)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--size", type=int, default=224, help="model input size (default 224)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="clips per model call (default: stmil's for the device, "
                        "pipeline_config.model_batch)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds of model calls, one per batch size the videos produce")
    p.add_argument("--long", action="store_true",
                   help="also check that peak RSS stays flat with video length")
    p.add_argument("--long-seconds", type=float, nargs=2, default=[30.0, 120.0],
                   help="lengths of the two --long videos (default 30 120)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--compare", action="store_true",
                   help="time extract_many per --precisions x --workers instead of the stages")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"),
                   default=["fp32", "bf16"], help="with --compare (default fp32 bf16)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="decode worker counts with --compare (default 0 2; 0 = serial)")
    p.add_argument("--batches", nargs="+", choices=tuple(BATCHES), default=["auto"],
                   help="with --compare: model batches per video, mixed across videos, or "
                        "auto (mixed on a GPU only, the default of stmil extract)")
    p.add_argument("--repeat", type=int, default=1,
                   help="with --compare: rounds over all settings; the best is reported")
    p.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--prefix", default="synth", help=argparse.SUPPRESS)
    p.add_argument("--lengths", type=float, nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.batch_size is None:
        args.batch_size = model_batch(resolve_device(args.device).type)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.generate_only:
        args.generate_only.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(args.lengths):
            generate_video(args.generate_only / f"{args.prefix}_{i:03d}_{s:g}s.mp4", s,
                           seed=zlib.crc32(args.prefix.encode()) + i)
        return
    if args.rss_child:
        rss_child(args.rss_child, args)
        return

    with tempfile.TemporaryDirectory(prefix="stmil-e2e-") as tmp:
        work = args.workdir or Path(tmp)
        if args.videos:
            videos, missing = expand_inputs([args.videos])
            if missing or not videos:
                raise SystemExit(f"{args.videos}: no videos found")
        else:
            n = args.generate or 4
            videos = generate(work / "videos", [args.seconds] * n)
        if args.compare:
            print(f"torch={torch.__version__} threads={torch.get_num_threads()} "
                  f"device={args.device} videos={len(videos)} size={args.size} "
                  f"batch={args.batch_size}", flush=True)
            rows = compare(videos, work, args)
            if args.json:
                args.json.write_text(json.dumps({"torch": torch.__version__,
                                                 "threads": torch.get_num_threads(),
                                                 "rows": rows}, indent=1) + "\n")
            print()
            print(compare_report(rows))
            return
        out = work / "features"
        out.mkdir(parents=True, exist_ok=True)
        s = ExtractSettings(size=args.size, batch_size=args.batch_size)
        extractor = FeatureExtractor(device=args.device)
        first = next(iter_clips(videos[0], s.clip_len, s.stride, s.size,
                                batch_size=s.batch_size), None)
        if first is None:
            raise SystemExit(f"{videos[0]}: shorter than one clip; it cannot seed the model stage")
        sample = first.clips
        sample = sample.repeat(-(-s.batch_size // len(sample)), 1, 1, 1, 1)[: s.batch_size]
        for _ in range(args.warmup):  # every batch size the videos will produce, once
            for b in sorted(set(batch_sizes(expected_clips(videos, s), s.batch_size))):
                extractor(sample[:b])
        print(f"torch={torch.__version__} threads={torch.get_num_threads()} "
              f"device={extractor.device} videos={len(videos)} size={s.size} "
              f"batch={s.batch_size}", flush=True)
        rss = {"model": peak_rss_mb()}
        stages: dict[str, float] = {}
        stages["full pipeline"], results = full_pipeline(videos, extractor, s, out)
        rss["full"] = peak_rss_mb()
        counts = [len(a) for _, a, _ in results]
        video_s = sum(m["n_frames"] / m["source_fps"] for _, _, m in results)
        stages["decode+convert"], frames = stage_decode(videos)
        stages["resize/normalise"] = stage_resize(videos, s.size)
        stages["clips (decode+resize+assemble)"] = stage_clips(videos, s)
        stages["model"] = stage_model(extractor, sample, counts, s.batch_size)
        stages["write"] = stage_write(out, results)
        for name, sec in stages.items():
            print(f"{name}: {sec:.2f} s", flush=True)
        long_rows = long_check(work / "long", args) if args.long else []
        if args.json:
            args.json.write_text(json.dumps(
                {"torch": torch.__version__, "threads": torch.get_num_threads(),
                 "device": str(extractor.device), "videos": [str(v) for v in videos],
                 "clips": sum(counts), "frames": frames, "video_s": video_s,
                 "stages_s": stages, "rss_mb": rss, "long": long_rows}, indent=1) + "\n")
        print()
        print(report(stages, sum(counts), frames, video_s, rss, long_rows))


if __name__ == "__main__":
    main()
