"""Serve a generated scene (tests/live/scene.py) as MPEG-TS over TCP on 127.0.0.1, like a
camera: ``python -m tests.live.serve_ts PORT N_FRAMES START:END [START:END...]``.

Listens for one client, then sends the frames at 30 fps (real time), printing ``sent N``
after each frame (flushed), and exits when done.
"""

from __future__ import annotations

import sys
import time

import av

from tests.live.scene import FPS, H, W, scene_frames


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    events = [tuple(int(v) for v in a.split(":")) for a in sys.argv[3:]]
    frames = scene_frames(n, events, seed=port % 97)
    with av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts") as out:
        s = out.add_stream("mpeg2video", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.bit_rate = 4_000_000
        t0 = None
        for i, f in enumerate(frames):
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)  # the first one waits for the client
            t0 = t0 if t0 is not None else time.monotonic()
            print(f"sent {i + 1}", flush=True)
            delay = t0 + (i + 1) / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for packet in s.encode():
            out.mux(packet)


if __name__ == "__main__":
    main()
