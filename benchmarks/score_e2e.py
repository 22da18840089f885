"""End-to-end ``stmil score`` over several videos: serial vs decode workers, per-video vs mixed
batches (issue 10, target 5).

Times :func:`stmil.score.score_inputs` (what ``stmil score VIDEOS... --workers W`` runs: load
the run and I3D, decode, resize, model, scorer, atomic writes) over the same generated videos
(320x240 30 fps H.264, from ``extract_e2e.py``) for each setting, in an interleaved order
repeated ``--repeat`` times (the best repeat is reported: a burst of load from other processes
on a shared machine hurts less). The run is a scorer with random weights (seed 0), saved as a
run folder with the clip settings given here: its cost is nothing next to I3D's. Each row says
whether its scores files are byte for byte those of the first row. Also printed: I3D alone on
the batches the videos produce with per-video batches (the floor the input pipeline can reach).

Settings: ``--workers`` (0 = serial) x ``--batches``: ``per-video``, ``mixed`` across videos
(``PipelineConfig.mix_videos``), or ``auto`` (mixed on a GPU only, the default of
``stmil score``)::

    .venv/bin/python benchmarks/score_e2e.py --generate 3 --seconds 6 --workers 0 2 \\
        --batches per-video mixed --repeat 2

Smoke test (tiny, seconds)::

    .venv/bin/python benchmarks/score_e2e.py --generate 2 --seconds 1.1 --size 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from extract_e2e import BATCHES, batch_sizes, expected_clips, generate, stage_model

from stmil.features.extract import ExtractSettings, FeatureExtractor
from stmil.features.pipeline_config import PipelineConfig
from stmil.features.video import iter_clips
from stmil.mil.model import Scorer
from stmil.mil.run import MODEL, save_model
from stmil.score import score_inputs


def make_run(folder: Path, size: int) -> Path:
    """A run folder whose scorer has random weights (seed 0) and these clip settings."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = {"in_dim": 528, "hidden": 512, "mid": 32, "dropout": 0.6, "grid": 7,
              "feature_grid": 7, "supervision": "weak", "endpoint": "Mixed_4e", "size": size,
              "clip_len": 16, "stride": 16, "tail": "drop"}
    save_model(folder / MODEL, Scorer().eval(), config)
    return folder


def compare(videos: list[Path], work: Path, args: argparse.Namespace) -> list[dict]:
    """Seconds per clip of each setting (best of ``--repeat``) and byte equality of its scores
    files with the first setting's."""
    run = make_run(work / "run", args.size)
    s = ExtractSettings(size=args.size)
    counts = expected_clips(videos, s)
    n_clips = sum(counts)
    ex = FeatureExtractor(device=args.device)
    settings = [(w, PipelineConfig(mix_videos=BATCHES[b]).mixes_videos(ex.device.type))
                for b in args.batches for w in args.workers]
    settings = list(dict.fromkeys(settings))  # auto is one of the others
    first = next(iter_clips(videos[0], s.clip_len, s.stride, s.size, batch_size=s.batch_size))
    sample = first.clips.repeat(-(-s.batch_size // len(first.clips)), 1, 1, 1, 1)
    sample = sample[: s.batch_size]
    for b in sorted(set(batch_sizes(counts, s.batch_size))):
        ex(sample[:b])  # warm-up, every batch size once
    best: dict[tuple[int, bool], float] = {}
    files: dict[tuple[int, bool], dict[str, bytes]] = {}
    model = float("inf")
    for r in range(args.repeat):
        model = min(model, stage_model(ex, sample, counts, s.batch_size))
        for w, mix in settings:
            out = work / f"scores-w{w}-{'mixed' if mix else 'video'}-r{r}"
            t0 = time.perf_counter()
            written, failed = score_inputs(videos, run, out, device=args.device, progress=False,
                                           pipeline=PipelineConfig(workers=w, mix_videos=mix))
            t = time.perf_counter() - t0
            if failed:
                raise SystemExit(f"scoring failed: {failed}")
            best[w, mix] = min(best.get((w, mix), t), t)
            files[w, mix] = {p.name: p.read_bytes() for p in written}
            print(f"repeat {r}: workers={w} batches={'mixed' if mix else 'per video'}: "
                  f"{t:.2f} s, {t / n_clips:.3f} s/clip", flush=True)
    ref = files[settings[0]]
    return [{"workers": w, "batches": "mixed" if mix else "per video", "seconds": t,
             "clips": n_clips, "s_per_clip": t / n_clips, "model_s_per_clip": model / n_clips,
             "same_bytes": files[w, mix] == ref} for (w, mix), t in best.items()]


def report(rows: list[dict]) -> str:
    lines = ["| workers | batches | end to end s/clip | clips/s | I3D alone s/clip | "
             "scores bytes = first row |", "|---:|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['batches']} | {r['s_per_clip']:.3f} | "
                     f"{1 / r['s_per_clip']:.2f} | {r['model_s_per_clip']:.3f} | "
                     f"{'yes' if r['same_bytes'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generate", type=int, default=3, metavar="N",
                   help="generate N 320x240 30 fps H.264 videos (default 3)")
    p.add_argument("--seconds", type=float, default=6.0, help="their length (default 6)")
    p.add_argument("--size", type=int, default=224, help="the run's model input size")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="decode worker counts (default 0 2; 0 = serial)")
    p.add_argument("--batches", nargs="+", choices=tuple(BATCHES), default=["auto"],
                   help="model batches per video, mixed across videos, or auto (mixed on a "
                        "GPU only; default)")
    p.add_argument("--repeat", type=int, default=1, help="rounds over all settings; best kept")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stmil-score-e2e-") as tmp:
        work = args.workdir or Path(tmp)
        videos = generate(work / "videos", [args.seconds] * args.generate)
        print(f"torch={torch.__version__} threads={torch.get_num_threads()} "
              f"device={args.device} videos={len(videos)} size={args.size} batch=8",
              flush=True)
        rows = compare(videos, work, args)
        print()
        print(report(rows))


if __name__ == "__main__":
    main()
