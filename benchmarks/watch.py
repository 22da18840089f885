"""``stmil watch`` speed: real-time factor, clips dropped and latency on a live source.

A 320x240, 30 fps H.264 video (textured background, moving blobs, sensor noise) is generated
and played to :func:`stmil.live.watch.watch` at its own frame rate (``--realtime``, so clips
that arrive while the scorer is busy are dropped, as for a camera), or served as MPEG-TS over
TCP on 127.0.0.1 (``--stream``). The run is a tiny model trained on planted 528-channel features
(the scorer's cost is negligible; I3D Mixed_4e at 224 x 224 is what is timed), with the clip
settings of a real run (16 frames, stride 16, 224 x 224).

For each setting (``--settings``: ``fp32`` or ``bf16`` (PyTorch), ``ort`` or ``ov`` (``--backend
onnxruntime`` / ``openvino`` on the run folder: the cached fp32 feature graph, the run's scorer),
``ov8`` (``--backend openvino`` on an int8 export of the run, NNCF-calibrated on the first clips
of the benchmark's own video), then optionally ``-fpsF`` for
``--fps F`` and ``-strideN`` for ``--stride N``, e.g. ``fp32-fps10``, ``fp32-fps15-stride32``)
it prints:

- ``clip s``: mean time to score one clip (I3D + cuboid pooling + scorer);
- ``RTF``: real-time factor, the seconds of video one second of scoring covers,
  ``(stride / fps) / clip s`` (>= 1: keeps up, nothing dropped once warm);
- ``scored``/``dropped``: clips scored and clips dropped while busy;
- ``latency``: median and 95th percentile time from the arrival of a clip's last frame to
  the end of its scoring, i.e. to any incident message it causes.

With ``--rss`` it also samples the process's resident memory once a second while ``watch``
runs and prints it at the first scored clip, the end, and its peak (memory must stay flat);
``--clips`` also records incident clips with threshold 0 (one incident open the whole time,
so the pre-roll ring and the clip writer, capped at 60 s, are exercised).

Example: ``python benchmarks/watch.py --seconds 20 --settings fp32 fp32-fps15``;
``python benchmarks/watch.py --seconds 300 --settings fp32-fps10 --stream --rss --clips``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_video(path: Path, seconds: float, fps: int = 30, w: int = 320, h: int = 240) -> Path:
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, size=(h // 8, w // 8, 3)).astype(np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in range(int(seconds * fps)):
            frame = base.astype(np.int16) + rng.integers(-6, 7, size=(h, w, 1))
            for k in range(4):  # people-sized blobs walking
                x = int((f * (2 + k) + 60 * k) % (w - 20))
                y = 40 + 40 * k
                frame[y:y + 40, x:x + 20] = 30 + 50 * k
            vf = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), "rgb24")
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def make_run(base: Path) -> Path:
    from stmil.mil.train import train
    from tests.planted import make_planted

    make_planted(base / "d", base / "f", n_train=4, n_test=2, n_clips=4, channels=528)
    train(base / "d", base / "f", base / "run", iterations=2, hidden=32, mid=8, n_segments=2,
          device="cpu", progress=False)
    return base / "run"


SERVE = """
import sys, time, av
src, port = sys.argv[1], int(sys.argv[2])
with av.open(src) as inp, av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts") as out:
    s = inp.streams.video[0]
    o = out.add_stream_from_template(s)
    t0 = None
    for packet in inp.demux(s):
        if packet.dts is None:
            continue
        packet.stream = o
        out.mux(packet)
        t0 = t0 if t0 is not None else time.monotonic() - float(packet.pts * s.time_base)
        d = t0 + float(packet.pts * s.time_base) - time.monotonic()
        if d > 0:
            time.sleep(d)
"""


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler(threading.Thread):
    """RSS once a second: ``samples`` of (seconds since start, MB)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.samples.append((time.monotonic() - self.t0, rss_mb()))


def run_setting(name: str, video: Path, run: Path, stream: bool,
                clips: Path | None = None, rss: bool = False) -> dict:
    from stmil.live.incidents import EventConfig
    from stmil.live.watch import WatchConfig, watch

    precision, fps, stride = parse_setting(name)
    backend = BACKENDS.get(precision, "torch")
    model = run
    if precision == "ov8":
        from stmil.deploy.export import export_model

        model = run.parent / "int8"
        if not model.exists():
            export_model(model, run, format="openvino", precision="int8", calibration=[video])
    cfg = WatchConfig(realtime=not stream, fps=fps, stride=stride,
                      precision=precision if backend == "torch" else None, backend=backend,
                      device="cpu", heartbeat=0, update=0, drop=True, retries=0, timeout=20)
    events = EventConfig(threshold=0.0 if clips else 1.0, min_duration=0.0)
    source, server = str(video), None
    if stream:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-c", SERVE, str(video), str(port)])
        source = f"tcp://127.0.0.1:{port}"
    sampler = RssSampler() if rss else None
    first: list[float] = []

    def emit(line: str) -> None:
        if not first:
            first.append(rss_mb())

    if sampler is not None:
        sampler.start()
    try:
        r = watch(source, model, events, cfg, emit=emit, clips=clips)
    finally:
        if server is not None:
            server.kill()
        if sampler is not None:
            sampler.done.set()
    if sampler is not None:
        mem = [m for _, m in sampler.samples]
        print(f"  RSS MB: {len(mem)} samples; at the first message {first[0] if first else 0:.0f}, "
              f"after 25% {mem[len(mem) // 4]:.0f}, end {mem[-1]:.0f}, peak {max(mem):.0f}; "
              f"{r.clips} clips scored, {r.dropped_clips} dropped, "
              f"{r.frames} frames", flush=True)
        if clips is not None:
            for p in sorted(clips.iterdir()):
                print(f"  clip {p.name}: {p.stat().st_size / 2**20:.1f} MB", flush=True)
    covered = (stride or 16) / (fps or 30.0)  # seconds of video per scored clip
    clip_s = r.score_seconds / max(1, r.clips)
    return {"setting": name, "clip_s": clip_s, "rtf": covered / clip_s, "scored": r.clips,
            "dropped": r.dropped_clips, "lat_med": r.latency_median_s,
            "lat_p95": r.latency_p95_s}


#: the exported settings: the --backend each runs
BACKENDS = {"ort": "onnxruntime", "ov": "openvino", "ov8": "openvino"}


def parse_setting(name: str) -> tuple[str, float | None, int | None]:
    """``fp32-fps10-stride32`` -> ("fp32", 10.0, 32)."""
    precision, *rest = name.split("-")
    if precision not in ("fp32", "bf16", *BACKENDS):
        raise argparse.ArgumentTypeError(f"{name}: starts with fp32, bf16, ort, ov or ov8")
    fps = stride = None
    for part in rest:
        if part.startswith("fps"):
            fps = float(part[3:])
        elif part.startswith("stride"):
            stride = int(part[6:])
        else:
            raise argparse.ArgumentTypeError(f"{name}: {part} is not fpsF or strideN")
    return precision, fps, stride


def setting(name: str) -> str:
    parse_setting(name)
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the video")
    ap.add_argument("--settings", nargs="+", type=setting, default=["fp32", "fp32-fps15"],
                    help="fp32|bf16|ort|ov|ov8[-fpsF][-strideN] each (default: fp32 fp32-fps15)")
    ap.add_argument("--stream", action="store_true", help="serve MPEG-TS over TCP instead")
    ap.add_argument("--rss", action="store_true", help="sample resident memory once a second")
    ap.add_argument("--clips", action="store_true",
                    help="record incident clips (threshold 0: one incident the whole time)")
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        video = make_video(base / "cam.mp4", args.seconds)
        run = make_run(base)
        print(f"{'setting':<12}{'clip s':>8}{'RTF':>7}{'scored':>8}{'dropped':>9}"
              f"{'lat med':>9}{'lat p95':>9}")
        for name in args.settings:
            t = time.perf_counter()
            r = run_setting(name, video, run, args.stream,
                            base / f"clips-{name}" if args.clips else None, args.rss)
            print(f"{r['setting']:<12}{r['clip_s']:>8.3f}{r['rtf']:>7.2f}{r['scored']:>8}"
                  f"{r['dropped']:>9}{r['lat_med']:>9.3f}{r['lat_p95']:>9.3f}"
                  f"   ({time.perf_counter() - t:.0f} s wall)", flush=True)


if __name__ == "__main__":
    main()
