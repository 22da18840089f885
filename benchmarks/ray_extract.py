"""``--engine ray`` against the local engine, and the measured parts of the scaling rule.

1. **Engines** (each in its own subprocess, so each peak is its own): the same generated
   videos (UCF-Crime-like: 320x240, 30 fps, H.264; ``benchmarks/extract_e2e.py``) through
   :func:`stmil.features.extract.extract_many` with ``--workers`` decode threads, and through
   :func:`stmil.features.ray_engine.extract_many` on a local Ray instance of ``--cpus`` CPUs
   (started in the subprocess; its start-up is reported apart). Each time is what ``stmil
   extract`` spends after that: the local engine's includes its model load, the Ray engine's
   the actor's start and model load (its driver loads none: ``ActorNetwork``). s/clip of
   each, the ratio ray / local (target <= 1.15 on 2 cores) and the peak memory: the sum of
   the proportional set sizes (PSS, shared pages split between their processes: the object
   store counted once) of the subprocess and all its descendants (Ray's GCS, raylet,
   workers), sampled every 0.1 s in one more round of each engine whose times are not
   reported: reading every process's smaps costs CPU, more for Ray's many processes (until
   2026-12-06 it ran in the timed rounds: benchmarks/NOTES.md).
2. **Parts** (this process): clips/s of one decode task
   (:func:`stmil.features.ray_decode.decode_range`, one thread, resize included), of the
   extractor alone (:class:`~stmil.features.extract.FeatureExtractor`, batches of
   ``--batch-size``, this machine's threads or ``--device cuda``), the cost of one Ray task
   (a trivial streaming generator, round trip) and of a short video's decode (one clip),
   which decides whether short videos should share a task.
3. **The rule**: a cluster of N GPU nodes with G GPUs and D decode CPUs each extracts
   ``min(N*G*r_gpu, N*D*r_dec)`` clips/s; UCF-Crime's ~864,000 clips take 864000 / that.
   r_dec is measured here (uint8 clips: GPU actors resize on the GPU); r_gpu is an input
   (``--gpu-clips-per-s``: no GPU was measured).

Run (a quiet machine; the numbers in benchmarks/NOTES.md came from this)::

    STMIL_CACHE=/tmp/stmilcache .venv/bin/python benchmarks/ray_extract.py \\
        --generate 4 --seconds 8 --cpus 2 --workers 2

Smoke test (tiny, about a minute)::

    .venv/bin/python benchmarks/ray_extract.py --generate 2 --seconds 1.1 --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

UCF_CRIME_CLIPS = 864_000


def tree_pss(root: int) -> int:
    """PSS in bytes of ``root`` and all its descendants (``/proc``)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def one_engine(args: argparse.Namespace) -> dict:
    """Run one engine over ``args.videos`` (in a subprocess of :func:`engines`)."""
    import torch

    from stmil.features.extract import ExtractSettings, FeatureExtractor, extract_many
    from stmil.features.pipeline_config import PipelineConfig

    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], tree_pss(os.getpid()))

    if args.memory:  # reading every process's smaps costs CPU: never in a timed round
        threading.Thread(target=sample, daemon=True).start()
    s = ExtractSettings(size=args.size, batch_size=args.batch_size)
    videos = sorted(Path(args.videos).glob("*.mp4"))
    out = Path(tempfile.mkdtemp(prefix=f"ray-bench-{args.one}-"))
    init = 0.0
    t0 = time.perf_counter()
    if args.one == "local":  # as `stmil extract`: the model's load counts
        ex = FeatureExtractor(device=args.device)
        summary = extract_many(videos, out, ex, s, progress=False,
                               pipeline=PipelineConfig(workers=args.workers))
    else:
        import ray

        from stmil.features import ray_engine

        # as stmil's connect() starts a local instance: workers at nice 0, not Ray's 15
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING",
                 _system_config={"worker_niceness": 0})
        init = time.perf_counter() - t0
        t0 = time.perf_counter()  # as `stmil extract --engine ray`: the actors load the model
        ex = ray_engine.ActorNetwork()
        summary = ray_engine.extract_many(videos, out, ex, s, progress=False,
                                          pipeline=PipelineConfig(engine="ray"),
                                          device=args.device)
    seconds = time.perf_counter() - t0
    stop.set()
    if args.memory:
        peak[0] = max(peak[0], tree_pss(os.getpid()))
    assert not summary.failed, summary.failed
    return {"engine": args.one, "clips": summary.clips, "seconds": seconds,
            "s_per_clip": seconds / summary.clips, "ray_init_s": init,
            "peak_pss_mib": peak[0] / 2**20, "torch_threads": torch.get_num_threads(),
            "out": str(out)}


def engines(args: argparse.Namespace, videos: Path, memory: bool = False) -> list[dict]:
    """One run of each engine, local first, each in its own subprocess; ``memory``: sample
    the peak PSS (a round whose times are not reported)."""
    rows = []
    for engine in ("local", "ray"):
        cmd = [sys.executable, __file__, "--one", engine, "--videos", str(videos),
               "--size", str(args.size), "--batch-size", str(args.batch_size),
               "--workers", str(args.workers), "--cpus", str(args.cpus),
               "--device", args.device, *(["--memory"] if memory else [])]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    a, b = (Path(r["out"]) for r in rows)
    same = all((a / p.name).read_bytes() == p.read_bytes() for p in b.iterdir() if p.is_file())
    rows[1]["same_files_as_local"] = same
    return rows


def parts(args: argparse.Namespace, videos: Path) -> dict:
    import ray
    import torch

    from stmil.features.extract import ExtractSettings, FeatureExtractor
    from stmil.features.ray_decode import decode_range

    s = ExtractSettings(size=args.size, batch_size=args.batch_size)
    paths = sorted(videos.glob("*.mp4"))
    threads = torch.get_num_threads()
    t0, clips, batches = time.perf_counter(), 0, []
    for p in paths:
        for item in decode_range(str(p), s, (0, None), True):
            if not isinstance(item, tuple):
                clips += len(item)
                if len(batches) < 2:
                    batches.append(torch.from_numpy(item))
    r_dec = clips / (time.perf_counter() - t0)
    t0, clips8 = time.perf_counter(), 0
    for p in paths:  # the GPU path: native uint8 clips, resized on the GPU
        for item in decode_range(str(p), s, (0, None), False):
            clips8 += 0 if isinstance(item, tuple) else len(item)
    r_dec8 = clips8 / (time.perf_counter() - t0)
    torch.set_num_threads(threads)
    ex = FeatureExtractor(device=args.device)
    ex(batches[0])  # warm-up
    t0, n = time.perf_counter(), 0
    for b in batches:
        ex(b)
        n += len(b)
    if ex.device.type == "cuda":
        torch.cuda.synchronize()
    r_model = n / (time.perf_counter() - t0)
    short = videos.parent / "short"
    from benchmarks.extract_e2e import generate  # the same generator, 16 frames

    one = generate(short, [16 / 30], prefix="one")[0]
    t0 = time.perf_counter()
    for _ in range(5):
        list(decode_range(str(one), s, (0, None), True))
    short_s = (time.perf_counter() - t0) / 5

    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    task = ray.remote(_trivial).options(num_cpus=1, num_returns="streaming")
    for g in [task.remote() for _ in range(5)]:  # warm the worker pool
        [ray.get(r) for r in g]
    t0 = time.perf_counter()
    gens = [task.remote() for _ in range(50)]
    for g in gens:
        [ray.get(r) for r in g]
    task_s = (time.perf_counter() - t0) / 50
    ray.shutdown()
    return {"decode_clips_per_s_per_worker": r_dec, "decode_uint8_clips_per_s_per_worker": r_dec8,
            "model_clips_per_s_cpu": r_model,
            "model_threads": threads, "ray_task_s": task_s, "one_clip_video_decode_s": short_s}


def _trivial():
    yield "end", None, {}


def rule(p: dict, gpu_clips_per_s: float, gpus: int, decode_cpus: int) -> list[str]:
    lines = []
    node = min(gpus * gpu_clips_per_s, decode_cpus * p["decode_uint8_clips_per_s_per_worker"])
    for n in (1, 4, 16, 64):
        hours = UCF_CRIME_CLIPS / (n * node) / 3600
        lines.append(f"N={n:3d} nodes ({gpus} GPUs, {decode_cpus} decode CPUs each): "
                     f"{n * node:8.0f} clips/s, UCF-Crime in {hours:6.2f} h")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generate", type=int, default=4)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=None,
                   help="clips per model call (default: stmil's for --device)")
    p.add_argument("--workers", type=int, default=2, help="the local engine's decode threads")
    p.add_argument("--cpus", type=int, default=2, help="the local Ray instance's CPUs")
    p.add_argument("--device", default="cpu", help="both engines' network (cuda: the Ray "
                   "engine's actors take the GPU)")
    p.add_argument("--gpu-clips-per-s", type=float, default=None,
                   help="an H100's I3D clips/s for the rule (not measured here)")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--decode-cpus", type=int, default=64)
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds of both engines")
    p.add_argument("--no-parts", action="store_true", help="only the engines")
    p.add_argument("--one", choices=("local", "ray"), help=argparse.SUPPRESS)
    p.add_argument("--videos", help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.batch_size is None:  # as benchmarks/extract_e2e.py: stmil's for the device
        from stmil.device import resolve_device
        from stmil.features.pipeline_config import model_batch

        args.batch_size = model_batch(resolve_device(args.device).type)
    if args.one:
        print(json.dumps(one_engine(args)))
        return
    from benchmarks.extract_e2e import generate

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    generate(work / "videos", [args.seconds] * args.generate)
    ratios = []
    for k in range(args.repeat):  # interleaved: a drift of the machine hits both engines
        rows = engines(args, work / "videos")
        for r in rows:
            print(json.dumps({"round": k, **{key: round(v, 4) if isinstance(v, float) else v
                                             for key, v in r.items()}}), flush=True)
        ratios.append(rows[1]["s_per_clip"] / rows[0]["s_per_clip"])
        print(f"round {k}: s/clip ratio ray / local {ratios[-1]:.3f}", flush=True)
    print(f"s/clip ratio ray / local: median {statistics.median(ratios):.3f} of "
          f"{[round(r, 3) for r in ratios]} (target <= 1.15)")
    peaks = {r["engine"]: round(r["peak_pss_mib"]) for r in engines(args, work / "videos", True)}
    print(f"peak PSS (a separate round, sampled every 0.1 s): {peaks} MiB", flush=True)
    if args.no_parts:
        return
    measured = parts(args, work / "videos")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                      for k, v in measured.items()}))
    if args.gpu_clips_per_s:
        print("\n".join(rule(measured, args.gpu_clips_per_s, args.gpus, args.decode_cpus)))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
