"""A local test camera: MPEG-TS over TCP on 127.0.0.1, served in real time.

``python -m tests.live.serve_ts PORT N_FRAMES [START:END...]`` serves the generated scene of
tests/live/scene.py (N frames, the planted event on each frame span);
``python -m tests.live.serve_ts PORT VIDEO`` serves a video file instead. Listens for one
client, sends the frames at the video's frame rate, printing ``sent N`` after each frame
(flushed), and exits when done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from tests.live.scene import FPS, scene_frames


def frames_of(args: list[str], port: int) -> tuple[Iterator[np.ndarray], float]:
    if Path(args[0]).is_file():
        from stmil.features.video import iter_frames, probe

        return iter_frames(args[0]), probe(args[0]).fps
    events = [tuple(int(v) for v in a.split(":")) for a in args[1:]]
    return iter(scene_frames(int(args[0]), events, seed=port % 97)), float(FPS)


def main() -> None:
    port = int(sys.argv[1])
    frames, fps = frames_of(sys.argv[2:], port)
    first = next(frames)
    with av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts") as out:
        s = out.add_stream("mpeg2video", rate=round(fps))
        s.width, s.height, s.pix_fmt = first.shape[1] // 2 * 2, first.shape[0] // 2 * 2, "yuv420p"
        s.bit_rate = 4_000_000
        t0 = None
        print("ready", flush=True)  # the socket listens from the first packet on
        for i, f in enumerate(_chain(first, frames)):
            frame = av.VideoFrame.from_ndarray(f[: s.height, : s.width], format="rgb24")
            for packet in s.encode(frame):
                out.mux(packet)  # the first one waits for the client
            t0 = t0 if t0 is not None else time.monotonic()
            print(f"sent {i + 1}", flush=True)
            delay = t0 + (i + 1) / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for packet in s.encode():
            out.mux(packet)


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


if __name__ == "__main__":
    main()
