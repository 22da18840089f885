"""``stmil watch`` speed: real-time factor, clips dropped and latency on a live source.

A 320x240, 30 fps H.264 video (textured background, moving blobs, sensor noise) is generated
and played to :func:`stmil.live.watch.watch` at its own frame rate (``--realtime``, so clips
that arrive while the scorer is busy are dropped, as for a camera), or served as MPEG-TS over
TCP on 127.0.0.1 (``--stream``). The run is a tiny model trained on planted 528-channel features
(the scorer's cost is negligible; I3D Mixed_4e at 224 x 224 is what is timed), with the clip
settings of a real run (16 frames, stride 16, 224 x 224).

For each setting (``--settings``: ``fp32``, ``bf16``, ``fp32-fps15``, ``bf16-fps15``) it prints:

- ``clip s``: mean time to score one clip (I3D + cuboid pooling + scorer);
- ``RTF``: real-time factor, the seconds of video one second of scoring covers,
  ``clip duration / clip s`` (>= 1: keeps up, nothing dropped once warm);
- ``scored``/``dropped``: clips scored and clips dropped while busy;
- ``latency``: median and 95th percentile time from the arrival of a clip's last frame to
  the end of its scoring, i.e. to any incident message it causes.

Example: ``python benchmarks/watch.py --seconds 20 --settings fp32 bf16 fp32-fps15``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
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


def run_setting(name: str, video: Path, run: Path, stream: bool) -> dict:
    from stmil.live.incidents import EventConfig
    from stmil.live.watch import WatchConfig, watch

    precision = "bf16" if name.startswith("bf16") else "fp32"
    fps = 15.0 if name.endswith("fps15") else None
    cfg = WatchConfig(realtime=not stream, fps=fps, precision=precision, device="cpu",
                      heartbeat=0, update=0, drop=True, retries=0, timeout=20)
    events = EventConfig(threshold=1.0, min_duration=0.0)
    source, server = str(video), None
    if stream:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-c", SERVE, str(video), str(port)])
        source = f"tcp://127.0.0.1:{port}"
    try:
        r = watch(source, run, events, cfg, emit=lambda line: None)
    finally:
        if server is not None:
            server.kill()
    clip_dur = 16 / (fps or 30.0)
    clip_s = r["score_seconds"] / max(1, r["clips"])
    return {"setting": name, "clip_s": clip_s, "rtf": clip_dur / clip_s, "scored": r["clips"],
            "dropped": r["dropped_clips"], "lat_med": r["latency_median_s"],
            "lat_p95": r["latency_p95_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the video")
    ap.add_argument("--settings", nargs="+", default=["fp32", "bf16", "fp32-fps15"],
                    choices=["fp32", "bf16", "fp32-fps15", "bf16-fps15"])
    ap.add_argument("--stream", action="store_true", help="serve MPEG-TS over TCP instead")
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
            r = run_setting(name, video, run, args.stream)
            print(f"{r['setting']:<12}{r['clip_s']:>8.3f}{r['rtf']:>7.2f}{r['scored']:>8}"
                  f"{r['dropped']:>9}{r['lat_med']:>9.3f}{r['lat_p95']:>9.3f}"
                  f"   ({time.perf_counter() - t:.0f} s wall)", flush=True)


if __name__ == "__main__":
    main()
