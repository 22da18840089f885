"""The live page of ``stmil watch SOURCE --model RUN --serve PORT``.

:class:`LiveFeed` is the watch's observer (:class:`stmil.live.watch.WatchObserver`): told each
scored clip (its middle frame, cuboid scores and box) and each incident line on the scorer's
thread, it keeps the newest frame as a JPEG, the clip scores of the last :data:`MINUTES`
minutes and the last :data:`MAX_LINES` incident lines, and numbers every change so the page's
server-sent events stream (``/api/live/events``) sends each once. The web server runs in a
thread of its own beside the watch and knows nothing of the camera: a camera that drops and
comes back (the watch reconnects) only shows as a pause, a ``stream lost`` incident end and a
new connection number; a browser that drops reconnects by itself and resumes after the last
change it saw (``Last-Event-ID``).

Routes: ``/`` (the page), ``/api/live/state`` (everything kept), ``/api/live/events``
(``clip`` and ``line`` events), ``/api/live/frame.jpg`` (the newest frame).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from stmil import safejson
from stmil.cuboids import cuboid_boxes
from stmil.live.incidents import ClipScore, EventConfig
from stmil.live.watch import WatchConfig, WatchSummary, watch
from stmil.serve.app import STATIC, listen, starlette_app

log = logging.getLogger(__name__)

MINUTES = 5.0  #: the score curve's span
MAX_LINES = 200  #: incident lines kept for a page that opens late
MAX_CHANGES = 1000  #: changes kept for a browser that reconnects
FRAME_WIDTH = 640  #: the newest frame is sent at most this wide
POLL = 0.1  #: seconds between looks at the feed of one event stream
KEEPALIVE = 15.0  #: seconds of silence before a comment line keeps a stream open


class LiveFeed:
    """What the live page shows of one watch (see the module docstring); thread-safe."""

    def __init__(self, source: str, threshold: float | None = None) -> None:
        self.source, self.threshold = source, threshold
        self._lock = threading.Lock()
        self.seq = 0  # the number of the last change
        self.closed = False
        self._changes: deque[tuple[int, str, dict]] = deque(maxlen=MAX_CHANGES)
        self._scores: deque[dict] = deque()
        self._lines: deque[dict] = deque(maxlen=MAX_LINES)
        self._latest: dict | None = None
        self._jpeg: bytes | None = None
        self._cells: dict[tuple[int, int, int], list] = {}

    def clip(self, clip: ClipScore, middle: np.ndarray, connection: int) -> None:
        """A scored clip: ``middle`` ``(H, W, 3)`` uint8 RGB, ``clip.scores`` ``(G*G,)``."""
        h, w = middle.shape[:2]
        grid = int(round(len(clip.scores) ** 0.5))
        if (w, h, grid) not in self._cells:
            self._cells[(w, h, grid)] = cuboid_boxes(w, h, grid).round(2).tolist()
        image = Image.fromarray(np.ascontiguousarray(middle))
        if w > FRAME_WIDTH:
            image = image.resize((FRAME_WIDTH, max(1, round(h * FRAME_WIDTH / w))),
                                 Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=80)
        now = time.time()
        data = {"start": clip.start, "end": clip.end, "score": round(clip.score, 4),
                "map": [round(float(x), 4) for x in clip.scores], "grid": grid,
                "box": [round(float(c), 2) for c in clip.box], "width": w, "height": h,
                "cells": self._cells[(w, h, grid)], "time": now, "connection": connection}
        with self._lock:
            self._jpeg = buf.getvalue()
            self._latest = data
            self._scores.append({"time": now, "score": data["score"], "start": clip.start,
                                 "connection": connection})
            while self._scores and self._scores[0]["time"] < now - MINUTES * 60:
                self._scores.popleft()
            self._change("clip", data)

    def line(self, line: str) -> None:
        """An incident line as the watch sent it (JSON: ``start``, ``update``, ``end``)."""
        data = safejson.loads(line)
        data.pop("track", None)  # the page shows the box at the peak, not every clip's
        with self._lock:
            self._lines.append(data)
            self._change("line", data)

    def close(self) -> None:
        """The watch is over: event streams end."""
        with self._lock:
            self.closed = True
            self._change("closed", {})

    def _change(self, kind: str, data: dict) -> None:
        self.seq += 1
        self._changes.append((self.seq, kind, data))

    def state(self) -> dict:
        """Everything kept: ``source``, ``threshold``, ``minutes``, ``seq``, ``latest`` (the
        newest clip), ``scores`` (``time``, ``score``, ``start``, ``connection`` per clip of
        the last minutes) and ``lines``."""
        with self._lock:
            return {"source": self.source, "threshold": self.threshold, "minutes": MINUTES,
                    "seq": self.seq, "closed": self.closed, "latest": self._latest,
                    "scores": list(self._scores), "lines": list(self._lines)}

    def since(self, seq: int) -> list[tuple[int, str, dict]]:
        """The changes after number ``seq`` that are still kept."""
        with self._lock:
            return [c for c in self._changes if c[0] > seq]

    def frame(self) -> bytes | None:
        with self._lock:
            return self._jpeg


def create_live_app(feed: LiveFeed):
    """The live page's ASGI app over ``feed``."""

    def page(request: Request) -> Response:
        return FileResponse(STATIC / "live.html", media_type="text/html")

    def state(request: Request) -> Response:
        return JSONResponse(feed.state())

    def frame(request: Request) -> Response:
        jpeg = feed.frame()
        if jpeg is None:
            return JSONResponse({"error": "no frame scored yet"}, status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        try:
            seq = int(request.headers.get("last-event-id")
                      or request.query_params.get("since") or feed.seq)
        except ValueError:
            seq = feed.seq
        return StreamingResponse(_stream(feed, seq), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    return starlette_app([Route("/", page), Route("/api/live/state", state),
                          Route("/api/live/frame.jpg", frame),
                          Route("/api/live/events", events)])


async def _stream(feed: LiveFeed, seq: int):
    """Server-sent events: each change after ``seq`` as ``id``, ``event`` and ``data``
    lines, until the feed closes."""
    yield "retry: 1000\n\n"
    quiet = time.monotonic()
    while True:
        changes = feed.since(seq)
        for n, kind, data in changes:
            yield f"id: {n}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
            seq = n
            if kind == "closed":
                return
        if changes:
            quiet = time.monotonic()
        elif time.monotonic() - quiet > KEEPALIVE:
            yield ": keepalive\n\n"
            quiet = time.monotonic()
        await asyncio.sleep(POLL)


class LiveServer:
    """The live page served in a thread: bound at construction (a taken port fails before
    the camera is opened), started by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self, feed: LiveFeed, host: str, port: int) -> None:
        import uvicorn  # deferred: the server loads when a page is served

        self.sock = listen(host, port, "the camera", "--serve")
        self.server = uvicorn.Server(uvicorn.Config(
            create_live_app(feed), log_level="warning", access_log=False,
            timeout_graceful_shutdown=2))
        self.server.install_signal_handlers = lambda: None  # the watch owns Ctrl-C
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.sock.getsockname()[1]}/"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        log.info(f"live page at {self.url}")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()


def watch_served(source: str, run: str | Path, events: EventConfig,
                 config: WatchConfig, **kwargs) -> WatchSummary:
    """:func:`stmil.live.watch.watch` with its live page at ``config.serve_host``:
    ``config.serve`` (see the module docstring); the page stays up until the watch ends."""
    feed = LiveFeed(source, events.threshold)
    server = LiveServer(feed, config.serve_host, config.serve)
    server.start()
    try:
        return watch(source, run, events, config, observer=feed, **kwargs)
    finally:
        feed.close()
        server.stop()
