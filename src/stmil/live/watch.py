"""``stmil watch``: a live detector over a file, a network stream or a camera (PyAV).

Two threads. The *reader* decodes the source, resamples (``fps``), resizes each kept frame to
the run's input size into a ring buffer of the last ``clip_len`` frames and, every ``stride``
kept frames, hands one clip to the *scorer* through a queue of one. When the scorer is still
busy with the previous clip, a live source's clip is dropped (and counted) rather than
queued, so the detector never falls behind and memory stays flat; a file read as fast as
possible waits instead (``drop=False``). The scorer runs I3D and the run's model on each clip,
feeds :class:`~stmil.live.incidents.IncidentTracker` and emits ``start``, ``update`` and
``end`` lines.

A network source that stops or stalls (no packet for ``timeout`` seconds) is reopened with
exponential backoff; the incident open at that moment ends with reason ``stream lost``.
Ctrl-C ends the open incident (reason ``interrupted``) and returns normally.

Evidence (``--snapshots``, ``--clips``) is named after the source (:func:`source_name`) and
numbered after the highest incident of that source already in the ``--out`` log and the
evidence folders (:func:`first_incident_id`), so a restart or a second camera never reuses a
number, and a file in the way is never replaced. Evidence that cannot be written is said in
the incident's ``end`` line (``snapshot_error``, ``clip_error``) and the watch goes on.

The pieces, each testable without a stream: :class:`Reader` (a connection -> clips),
:class:`LiveScorer` (a clip -> maps, box, :class:`~stmil.live.incidents.ClipScore`),
:class:`IncidentOutput` (incident lines, snapshots, clips; and a :class:`WatchObserver`, told
every scored clip and every line, such as the live page of :mod:`stmil.serve.live`) and
:func:`reconnect` (backoff); :class:`_Session` runs the connections and :func:`watch` wires
them up.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from stmil.cuboids import cuboid_boxes, predicted_boxes
from stmil.deploy.manifest import MANIFEST, check_export
from stmil.deploy.preprocess import resize_frames as numpy_resize
from stmil.deploy.runtime import ExportedModel
from stmil.errors import ConfigError, ModelError, StmilError
from stmil.features.video import to_model_input
from stmil.files import av_path
from stmil.files import one_line as _one_line
from stmil.live.clip import ClipRecorder, prepare_clips_dir
from stmil.live.incidents import (
    ClipScore,
    EventConfig,
    Incident,
    IncidentTracker,
    check_log,
    incident_line,
    read_incidents,
)
from stmil.live.settings import WatchConfig
from stmil.live.snapshot import describe, prepare_evidence_dir, snapshot_name, write_snapshot
from stmil.timeline import resample_indices

if TYPE_CHECKING:
    from stmil.mil.detector import Detector

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp", "srt",
                   "rtp")


class StreamError(StmilError, ValueError):
    """A source that cannot be opened or is not a video; the message names it."""


def is_network(source: str) -> bool:
    return source.split("://", 1)[0].lower() in NETWORK_SCHEMES if "://" in source else False


def is_camera(source: str) -> bool:
    return source.startswith("/dev/video")


def local_source(source: str) -> str:
    """``source`` with a ``file://`` URL made the local path it names (percent-escapes
    decoded); any other source unchanged."""
    if source[:7].lower() != "file://":
        return source
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(source)
    if parts.netloc not in ("", "localhost"):
        raise StreamError(f"{source}: a file URL of another host; give a local path")
    return unquote(parts.path)


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_NAME = 100


def source_name(source: str, name: str | None = None) -> str:
    """The name of a source's evidence files (``<name>.incident-NNN.jpg``, ``.mp4``).

    ``name`` when given (``--name``: 1 to 100 letters, digits, ``.``, ``_`` or ``-``, starting
    with a letter or digit); else a file's or camera's stem (``cam.mkv``, ``/dev/video0`` ->
    ``cam``, ``video0``); else a network source's host, port, path and query, never its user or
    password, each run of other characters made one ``_`` (``tcp://127.0.0.1:5000`` ->
    ``127.0.0.1_5000``). A longer name keeps its first 91 characters and 8 hex digits of the
    SHA-256 of the whole, so two long URLs stay apart. :class:`ConfigError` for a bad ``name``.
    """
    if name is not None:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"--name must be 1 to {MAX_NAME} letters, digits, '.', '_' or "
                              f"'-', starting with a letter or digit; got {name!r}")
        return name
    if not is_network(source):
        return Path(source).stem
    url = urlsplit(source)
    try:
        port = url.port
    except ValueError:  # a port that is not a number: kept as written in the netloc
        port = None
    host = url.hostname or url.netloc.rpartition("@")[2]
    raw = "_".join(p for p in (host, str(port) if port else "", url.path, url.query) if p)
    clean = re.sub(r"[^A-Za-z0-9.-]+", "_", raw).strip("._-") or "stream"
    if len(clean) > MAX_NAME:
        clean = f"{clean[:91]}_{hashlib.sha256(raw.encode()).hexdigest()[:8]}"
    return clean


def first_incident_id(name: str, source: str, out: Path | None,
                      folders: list[Path]) -> int:
    """The number of the next incident of ``source``: one more than the highest found in the
    ``out`` log (lines whose ``source`` is ``source``) and in ``folders``
    (``<name>.incident-NNN.jpg``, ``.mp4``), so that numbers continue across runs."""
    top = 0
    if out is not None and out.is_file():
        top = max((inc.id for _, inc in read_incidents(out) if inc.source == source), default=0)
    pattern = re.compile(re.escape(name) + r"\.incident-(\d+)\.(?:jpg|mp4)")
    for folder in folders:
        for entry in os.scandir(folder):
            m = pattern.fullmatch(entry.name)
            if m:
                top = max(top, int(m[1]))
    return top + 1


@dataclass
class Clip:
    """A clip handed from the reader to the scorer: ``(3, T, S, S)`` float32 frames in [-1, 1]
    (numpy: no PyTorch on an exported model), its
    source frames ``[start, end)`` (counted over the whole watch), the raw middle frame
    ``(H, W, 3)`` for snapshots (its size is the one the clip's boxes are in: a stream may
    change size), and when its last frame arrived (``time.monotonic``)."""

    frames: np.ndarray
    start: int
    end: int
    middle: np.ndarray
    arrived: float


@dataclass
class Stats:
    """Counters shared by the threads (plain ints: updated by one thread each)."""

    frames: int = 0  # source frames decoded
    clips: int = 0  # clips scored
    dropped_clips: int = 0
    dropped_frames: int = 0  # kept frames whose clip was dropped, counted once each
    connections: int = 0
    score_seconds: float = 0.0  # time spent in I3D and the scorer
    latencies: deque = field(default_factory=lambda: deque(maxlen=256))
    behind: float = 0.0  # live or --realtime: seconds the reader is behind the source's clock
    max_behind: float = 0.0


class WatchObserver(Protocol):
    """Told what a watch sees, on its scorer thread (return quickly): each scored clip with
    its middle frame ``(H, W, 3)`` uint8 RGB and the connection number, and each incident line
    (JSON) as it is sent."""

    def clip(self, clip: ClipScore, middle: np.ndarray, connection: int) -> None: ...

    def line(self, line: str) -> None: ...


class _Lost(Exception):
    """The source ended or stalled; ``str`` says how."""


def open_source(source: str, timeout: float):
    """Open ``source`` with PyAV: ``(container, video stream, fps, width, height)``;
    :class:`StreamError` naming it when it cannot be opened or holds no video."""
    import av

    kwargs: dict = {"timeout": (timeout, timeout)}
    url = source
    if is_camera(source):
        kwargs["format"] = "v4l2"
    elif not is_network(source):
        path = Path(source)
        if not path.is_file():
            raise StreamError(f"{source}: no such file (and not a stream URL: "
                              f"{', '.join(s + '://' for s in NETWORK_SCHEMES[:6])}...)")
        url = av_path(path)
    try:
        container = av.open(url, **kwargs)
    except av.error.ExitError:
        raise StreamError(f"{source}: no video data within {timeout:g} s (a stalled server, "
                          "or not a stream); check the URL, or raise --timeout") from None
    except av.FFmpegError as e:
        raise StreamError(f"{source}: cannot open ({_one_line(e)})") from None
    if not container.streams.video:
        container.close()
        raise StreamError(f"{source}: not a video stream (no video track)")
    s = container.streams.video[0]
    rate = s.average_rate or s.guessed_rate or s.base_rate
    fps = float(rate) if rate else 0.0
    w, h = s.codec_context.width, s.codec_context.height
    if not fps or not math.isfinite(fps) or fps > 1000 or w <= 0 or h <= 0:
        container.close()
        raise StreamError(f"{source}: not a usable video stream (frame rate {fps}, size "
                          f"{w}x{h})")
    return container, s, fps, w, h


class Reader(threading.Thread):
    """Decodes one connection of a source into clips on ``out``; see the module docstring.

    Puts :class:`Clip` objects, then one final ``("lost", reason)`` or ``("eof", None)``.
    """

    def __init__(self, container, stream, src_fps: float, settings: dict, out: queue.Queue,
                 stats: Stats, stop: threading.Event, drop: bool, realtime: bool,
                 offset: int, recorder=None, paced: bool = False,
                 resize: Callable[[np.ndarray, int], np.ndarray] | None = None):
        super().__init__(daemon=True)
        # frames (N, H, W, 3) uint8 -> model input (N, 3, S, S) float32: the one resize
        # definition, PyTorch's or the numpy one of an exported model (stmil.deploy.preprocess)
        self.resize = resize or torch_resize
        self.container, self.stream, self.src_fps = container, stream, src_fps
        self.s, self.out, self.stats, self.stop = settings, out, stats, stop
        self.drop, self.realtime, self.offset = drop, realtime, offset
        self.recorder = recorder  # a ClipRecorder fed every decoded frame, or None
        self.paced = paced or realtime  # a live source or --realtime: measure how far behind

    def run(self) -> None:
        import av

        s = self.s
        clip_len, stride, size = s["clip_len"], s["stride"], s["size"]
        window: deque[tuple[np.ndarray, int, np.ndarray]] = deque(maxlen=clip_len)
        wanted = resample_indices(self.src_fps, s["fps"])
        next_src, n_sampled, last_start = next(wanted), 0, -stride
        t0 = None
        end: tuple = ("eof", None)
        try:
            self.stream.thread_type = "AUTO"
            for src, frame in enumerate(self.container.decode(self.stream)):
                if self.stop.is_set():
                    return
                self.stats.frames += 1
                if self.paced and frame.time is not None:  # the source's clock against ours
                    t0 = t0 if t0 is not None else time.monotonic() - frame.time
                    delay = t0 + frame.time - time.monotonic()
                    if delay > 0 and self.realtime:
                        time.sleep(delay)
                    self.stats.behind = max(0.0, -delay)
                    self.stats.max_behind = max(self.stats.max_behind, self.stats.behind)
                if self.recorder is not None:
                    self.recorder.feed(src + self.offset, frame)
                if src < next_src:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                resized = self.resize(rgb[None], size)[0]
                while next_src == src:
                    window.append((resized, src + self.offset, rgb))
                    n_sampled += 1
                    start = n_sampled - clip_len
                    if start >= 0 and start % stride == 0:
                        last_start = start
                        self._hand(window, time.monotonic())
                    next_src = next(wanted)
            if s["tail"] == "pad" and last_start + stride < n_sampled and window:
                have = list(window)[last_start + stride - (n_sampled - len(window)):]
                have += [have[-1]] * (clip_len - len(have))
                self._hand(deque(have), time.monotonic(), end=have[-1][1] + 1)
        except av.error.ExitError:
            end = ("lost", f"no data for {s['timeout']:g} s")
        except av.FFmpegError as e:
            end = ("lost", _one_line(e))
        except Exception as e:  # noqa: BLE001 - reported to the scorer, which re-raises
            end = ("error", e)
        finally:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
        self._put(end)

    def _hand(self, window, arrived: float, end: int | None = None) -> None:
        frames = np.stack([f for f, _, _ in window], axis=1)
        first, last = window[0][1], window[-1][1]
        clip = Clip(frames, first, end if end is not None else last + 1,
                    window[len(window) // 2][2], arrived)
        if self.drop:
            try:
                self.out.put_nowait(clip)
            except queue.Full:
                self.stats.dropped_clips += 1
                self.stats.dropped_frames += self.s["stride"]
        else:
            self._put(clip)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def torch_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """:func:`stmil.features.video.to_model_input` as numpy: ``(N, H, W, 3)`` uint8 ->
    ``(N, 3, S, S)`` float32."""
    return to_model_input(frames, size).numpy()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class LiveScorer:
    """Scores the clips of a watch: :class:`Clip` -> cuboid maps, box, :class:`ClipScore`.

    ``extractor``: ``(1, 3, T, S, S)`` frames in [-1, 1] -> features ``(1, N, C)`` (N = G*G
    cuboids; I3D in a watch, anything of that shape in a test); ``detector`` turns them into
    maps ``(1, N)`` (with its motion gate on the clip's motion energy). ``threshold``: the
    events' threshold, whose hot cuboids' union is the box (else the top cuboid's box).
    """

    def __init__(self, detector: Detector, extractor: Callable, grid: int,
                 threshold: float | None):
        self.detector, self.extractor = detector, extractor
        self.grid, self.threshold = grid, threshold
        self.resize = torch_resize  # the reader's, for this scorer's input
        self._boxes: dict[tuple[int, int], np.ndarray] = {}  # (width, height) -> cuboid boxes

    def maps(self, frames: np.ndarray) -> np.ndarray:
        """One clip's frames ``(3, T, S, S)`` (array or tensor) -> its cuboid maps ``(1, N)``
        float32."""
        import torch  # deferred: PyTorch, for this scorer only (ExportedLiveScorer has none)

        from stmil.features.motion import motion_energy  # deferred: torch, as above

        x = torch.as_tensor(frames)[None]  # (1, 3, T, S, S)
        feats = self.extractor(x).numpy().astype(np.float16)
        return self.detector.maps(feats, motion_energy(x, self.grid))

    def clip_score(self, clip: Clip, maps: np.ndarray) -> ClipScore:
        """``clip`` scored ``maps`` ``(1, N)``: its frames, scores ``(N,)`` and box in the
        pixels of its middle frame ``(H, W, 3)`` (a stream may change size)."""
        size = (clip.middle.shape[1], clip.middle.shape[0])
        if size not in self._boxes:
            self._boxes[size] = cuboid_boxes(*size, self.grid)
        box = predicted_boxes(maps, self._boxes[size], self.threshold)[0]
        return ClipScore(clip.start, clip.end, maps[0], tuple(map(float, box)))


class ExportedLiveScorer(LiveScorer):
    """:class:`LiveScorer` on an export made with ``--model RUN``, with numpy and ONNX Runtime
    alone: the feature graph of ``features`` (its cuboid features, rounded to float16 as
    feature files store them, and its motion energy) and the scorer graph of ``model``."""

    def __init__(self, model: ExportedModel, features: ExportedModel, threshold: float | None):
        super().__init__(None, None, features.manifest.features["grid"], threshold)
        self.model, self.features = model, features
        self.resize = numpy_resize

    def maps(self, frames: np.ndarray) -> np.ndarray:
        feats, motion = self.features.features(np.asarray(frames)[None])
        return self.model.maps(feats.astype(np.float16), motion)


class IncidentOutput:
    """Where a watch's incidents go: the tracker's ``start``, ``update`` and ``end`` lines to
    the ``log_path`` log (one append per line) and ``emit``; the middle frame ``(H, W, 3)`` of
    each incident's peak clip as a snapshot in ``snap_dir``; its MP4 through ``recorder``.

    Evidence that cannot be written is said in the ``end`` line and counted
    (:attr:`failures`). :attr:`connection` and :attr:`frame_offset` are stamped on every line;
    the reconnect loop sets them.
    """

    def __init__(self, tracker: IncidentTracker, name: str, log_path: Path | None,
                 emit: Callable[[str], None], snap_dir: Path | None,
                 recorder: ClipRecorder | None, observer: WatchObserver | None = None):
        self.tracker, self.name, self.log_path, self.emit = tracker, name, log_path, emit
        self.snap_dir, self.recorder, self.observer = snap_dir, recorder, observer
        self.peaks: dict[int, tuple[float, np.ndarray]] = {}  # id -> (score, middle frame)
        self.snapshot_failures = 0
        self.connection, self.frame_offset = 0, 0

    @property
    def failures(self) -> int:
        """Snapshots and clips that could not be written."""
        return self.snapshot_failures + (self.recorder.failures if self.recorder else 0)

    def put(self, line: str) -> None:
        if self.log_path is not None:  # opened for each line: a rotated log is followed
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        self.emit(line)
        if self.observer is not None:
            self.observer.line(line)

    def evidence(self, inc: Incident, now: bool) -> dict:
        """Finish the incident's clip and write its snapshot; ``{kind_error: why}`` for those
        that could not be written. ``now``: the input is over, commit the clip as it is."""
        errors = {}
        if self.recorder is not None:
            err = self.recorder.finish(inc.id, inc.end_frame, now=now)
            if err:
                errors["clip_error"] = err
        if self.snap_dir is not None and inc.id in self.peaks:
            try:
                write_snapshot(self.snap_dir / snapshot_name(self.name, inc.id),
                               self.peaks.pop(inc.id)[1], inc.box,
                               f"#{inc.id} {inc.peak_score:.2f}", command="watch")
            except (OSError, StmilError) as e:
                errors["snapshot_error"] = describe(e)
                self.snapshot_failures += 1
                log.error("%s", f"incident snapshot not written: {errors['snapshot_error']}")
        return errors

    def send(self, kind: str, inc: Incident, latency: float | None, now: bool = False) -> None:
        extra: dict = {"wall_time": _now(), "connection": self.connection,
                       "frame_offset": self.frame_offset}
        if latency is not None:
            extra["latency_s"] = round(latency, 4)
        if kind == "end":
            extra.update(self.evidence(inc, now))
        self.put(incident_line(kind, inc, **extra))

    def push(self, clip: ClipScore, middle: np.ndarray, latency: float) -> None:
        """Feed one scored clip (its middle frame ``(H, W, 3)``) to the tracker, send what it
        says, and keep the recorder and the peak frame of the candidate incident current."""
        tracker = self.tracker
        if self.observer is not None:
            self.observer.clip(clip, middle, self.connection)
        for kind, inc in tracker.push(clip):
            self.send(kind, inc, latency)
        tid = tracker.next_id
        if not tracker.clips:  # no candidate: forget a dropped one's peak frame
            self.peaks.pop(tid, None)
        if self.recorder is not None:
            c = tracker.clips
            self.recorder.track(tid, c[0].start if c else None, c[-1].end if c else 0)
        if self.snap_dir is not None and any(c is clip for c in tracker.clips):
            if tid not in self.peaks or clip.score > self.peaks[tid][0]:
                self.peaks[tid] = (clip.score, middle)

    def update(self) -> None:
        """An ``update`` line for the open incident, if any."""
        if self.tracker.open is not None:
            self.send("update", self.tracker.open, None)

    def close(self, reason: str) -> None:
        """End the open incident (``reason``) and commit the evidence buffered so far."""
        for kind, inc in self.tracker.close(reason):
            self.send(kind, inc, None, now=True)
        if self.recorder is not None:
            self.recorder.track(self.tracker.next_id, None)
            self.recorder.flush()


def reconnect(source: str, cfg: WatchConfig, stop: threading.Event, failures: int, why: str,
              opener: Callable | None = None) -> tuple[tuple | None, str | None, int]:
    """Reopen a lost ``source`` with exponential backoff (``cfg.backoff`` doubled per failure
    up to ``cfg.max_backoff``) until it opens, ``cfg.retries`` failures, or ``stop``.

    ``failures``: reconnection attempts since the last scored clip; ``why``: how the stream was
    lost. ``opener(source, timeout)`` (default :func:`open_source`) returns
    ``(container, stream, fps, width, height)`` or raises :class:`StreamError`. Returns
    ``(opened or None, ended or None, failures)``; ``ended``: ``gave up`` or ``stopped``.
    """
    opener = opener or open_source
    while True:
        if cfg.retries is not None and failures >= cfg.retries:
            log.info(f"{source}: stream lost ({why}); giving up after {failures} "
                     "reconnection attempts")
            return None, "gave up", failures
        delay = min(cfg.max_backoff, cfg.backoff * 2 ** failures)
        failures += 1
        log.info(f"{source}: stream lost ({why}); reconnecting in {delay:.1f} s "
                 f"(attempt {failures})")
        if stop.wait(delay):
            return None, "stopped", failures
        try:
            opened = opener(source, cfg.timeout)
        except StreamError as e:
            why = str(e).removeprefix(f"{source}: ")
            continue
        log.info(f"{source}: reconnected")
        return opened, None, failures


class _Session:
    """The connections of one watch: a :class:`Reader` per connection, its clips scored by
    ``scorer`` and told to ``output``, heartbeats and updates on the clock, and
    :func:`reconnect` after a live source is lost. :meth:`run` returns how the watch ended."""

    def __init__(self, source: str, cfg: WatchConfig, settings: dict, scorer: LiveScorer,
                 output: IncidentOutput, stats: Stats, stop: threading.Event, live: bool,
                 drop: bool):
        self.source, self.cfg, self.settings, self.scorer = source, cfg, settings, scorer
        self.output, self.stats, self.stop, self.live, self.drop = output, stats, stop, live, drop
        self.recorder = output.recorder
        self.reader: Reader | None = None
        self.offset, self.failures = 0, 0  # frames before this connection; failed reopens
        self.fps = 0.0  # this connection's frame rate
        self._reason, self._detail, self._ended = None, "", None  # how the last one ended
        self.last_beat = self.last_update = time.monotonic()
        self.beat_clips = 0

    def run(self, opened: tuple) -> str:
        """Watch from the open connection ``opened`` (:func:`open_source`'s tuple) to the end."""
        ended = None
        try:
            while ended is None:
                ended = self._connection(*opened)
                if ended is None:
                    opened = self._lost()
                    ended = None if opened is not None else self._ended
        except KeyboardInterrupt:
            ended = "interrupted"
            self.output.close("interrupted")
        finally:
            self.stop.set()
            if self.reader is not None:  # a thread in FFmpeg or torch at exit aborts the process
                self.reader.join(timeout=self.cfg.timeout + 5)
        if ended in ("stopped", "gave up"):
            self.output.close("stream lost" if ended == "gave up" else "interrupted")
        return ended

    def _connection(self, container, stream, fps: float, width: int, height: int
                    ) -> str | None:
        """Score one connection until its reader ends: ``None`` when a live source is lost
        (:attr:`_reason`, :attr:`_detail` say how), else how the watch ended."""
        self.fps = fps
        self.output.tracker.fps = fps
        self.stats.connections += 1
        self.output.connection = self.stats.connections
        if self.recorder is not None:
            self.recorder.connect(fps, width, height)
        q: queue.Queue = queue.Queue(maxsize=1)
        self.reader = Reader(container, stream, fps, self.settings, q, self.stats, self.stop,
                             self.drop, self.cfg.realtime and not self.live, self.offset,
                             self.recorder, paced=self.live, resize=self.scorer.resize)
        self.reader.start()
        reason, detail = None, ""
        while reason is None:
            if self.stop.is_set():
                return "stopped"
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                item = None
            now = time.monotonic()
            if isinstance(item, Clip):
                self.failures = 0
                self._score(item)
            elif isinstance(item, tuple):
                kind, detail = item
                if kind == "error":
                    raise detail
                reason = kind if kind == "lost" else "eof"
            self._tick(now)
        if not self.live:
            self.output.close("end of input")
            return "end of input"
        self._reason, self._detail = reason, detail
        return None

    def _score(self, item: Clip) -> None:
        t_score = time.monotonic()
        maps = self.scorer.maps(item.frames)
        self.stats.score_seconds += time.monotonic() - t_score
        clip = self.scorer.clip_score(item, maps)
        self.stats.clips += 1
        latency = time.monotonic() - item.arrived
        self.stats.latencies.append(latency)
        self.output.push(clip, item.middle, latency)

    def _tick(self, now: float) -> None:
        """The open incident's ``update`` line and the heartbeat, each when it is due."""
        cfg = self.cfg
        if cfg.update and now - self.last_update >= cfg.update:
            self.last_update = now
            self.output.update()
        if cfg.heartbeat and now - self.last_beat >= cfg.heartbeat:
            rate = (self.stats.clips - self.beat_clips) / (now - self.last_beat)
            self.last_beat, self.beat_clips = now, self.stats.clips
            log.info(heartbeat_line(self.stats, rate, self.fps, self.settings))

    def _lost(self) -> tuple | None:
        """After a live source is lost: end its incident, then :func:`reconnect`; the new
        connection, or ``None`` with :attr:`_ended` set."""
        self.output.close("stream lost")
        self.offset = self.stats.frames  # the next connection's frames are counted after these
        self.output.frame_offset = self.offset
        why = self._detail if self._reason == "lost" and self._detail else "the stream ended"
        opened, self._ended, self.failures = reconnect(self.source, self.cfg, self.stop,
                                                       self.failures, why)
        return opened


def watch(
    source: str,
    run: str | Path,
    events: EventConfig,
    config: WatchConfig | None = None,
    *,
    emit: Callable[[str], None] | None = None,
    out: str | Path | None = None,
    snapshots: str | Path | None = None,
    clips: str | Path | None = None,
    name: str | None = None,
    stop: threading.Event | None = None,
    observer: WatchObserver | None = None,
) -> WatchSummary:
    """Watch ``source`` with the run's model until it ends (a file), ``stop`` is set, Ctrl-C,
    or ``config.retries`` reconnections fail; returns a :class:`WatchSummary`.

    Messages are JSON lines (``start``, ``update``, ``end``; see docs/live.md) given to
    ``emit`` (default: stdout, or nothing when ``out`` is given) and appended to ``out`` (one
    flushed write per line; a file holding anything but stmil incident lines is refused);
    heartbeat and connection lines are logged (``stmil.live.watch``, INFO). ``snapshots``: a
    folder for one JPEG per incident; ``clips``: a folder for one MP4 per incident (see
    :mod:`stmil.live.clip`: a pre-roll ring buffer, a cap on the clip's length); both are
    proved writable before the source is opened. Evidence files are named
    ``<name>.incident-NNN`` (:func:`source_name`; ``name`` overrides) and numbered after the
    incidents of earlier runs (:func:`first_incident_id`). ``observer`` is told every scored
    clip and every line (:class:`WatchObserver`; ``config.serve`` is for
    :func:`stmil.serve.live.watch_served`, which passes its live page). Raises
    :class:`StreamError` when the source cannot be opened the first time (within
    ``config.timeout``).
    """
    cfg = config or WatchConfig()
    if cfg.serve is not None and observer is None:
        log.warning(f"serve={cfg.serve}: watch() alone serves no page; call "
                    "stmil.serve.live.watch_served for the live page")
    source = local_source(source)  # file:///path/cam.mkv is the file /path/cam.mkv
    name, log_path, snap_dir, clip_dir, first_id = _prepare_outputs(source, name, out,
                                                                    snapshots, clips)
    if emit is None:
        emit = (lambda line: None) if log_path is not None else (lambda line: print(line,
                                                                                   flush=True))
    model, mc = _load_run(run, cfg)  # the run's recorded config
    settings = {"clip_len": mc["clip_len"], "stride": cfg.stride or mc["stride"],
                "size": mc["size"], "fps": cfg.fps if cfg.fps is not None
                else mc.get("resample_fps"), "tail": mc["tail"], "timeout": cfg.timeout}
    live = is_network(source) or is_camera(source)
    drop = cfg.drop if cfg.drop is not None else (live or cfg.realtime)
    stop, stats, started = stop or threading.Event(), Stats(), time.monotonic()
    recorder = ClipRecorder(clip_dir, name, source) if clip_dir is not None else None
    opened = _first_open(source, cfg.timeout)  # (container, stream, fps, width, height)
    for line in settings_warnings(mc, settings, opened[2]):
        log.warning(line)
    try:
        scorer = _live_scorer(model, cfg, events.threshold)
    except BaseException:
        opened[0].close()
        raise
    output = IncidentOutput(IncidentTracker(events, opened[2], source, first_id=first_id),
                            name, log_path, emit, snap_dir, recorder, observer)
    ended = _Session(source, cfg, settings, scorer, output, stats, stop, live, drop).run(opened)
    if recorder is not None:
        recorder.close()
    return _summary(ended, stats, output, first_id, started)


def _prepare_outputs(source: str, name: str | None, out, snapshots, clips
                     ) -> tuple[str, Path | None, Path | None, Path | None, int]:
    """Check the outputs before the source is opened: ``(name, log path, snapshot folder,
    clip folder, first incident id)`` (see :func:`watch`)."""
    name = source_name(source, name)
    log_path = Path(out) if out is not None else None
    if log_path is not None:
        check_log(log_path)
        open(log_path, "a", encoding="utf-8").close()  # writable: found now, not at an incident
    snap_dir = prepare_evidence_dir(snapshots) if snapshots is not None else None
    clip_dir = prepare_clips_dir(clips) if clips is not None else None
    first_id = first_incident_id(name, source, log_path,
                                 [d for d in (snap_dir, clip_dir) if d is not None])
    return name, log_path, snap_dir, clip_dir, first_id


def _load_run(run: str | Path, cfg: WatchConfig) -> tuple[Any, Any]:
    """``(model, the run's recorded config)``: with an exported backend and an export folder
    made with ``--model RUN``, its :class:`~stmil.deploy.runtime.ExportedModel` (no PyTorch);
    else the run folder's :class:`~stmil.mil.detector.Detector` (:func:`_load_detector`)."""
    is_export = (Path(run) / MANIFEST).is_file()
    if is_export and cfg.backend == "torch":
        raise ConfigError(f"{run}: an export folder (stmil export-model); watch it with "
                          "--backend onnxruntime, or pass the run folder")
    if not is_export:
        detector = _load_detector(run)
        return detector, detector.config.recorded
    model = ExportedModel(run, cfg.device, cfg.backend)
    if model.manifest.scorer is None:
        raise ModelError(f"{run}: exported without --model, so it holds no scorer; export "
                         "with stmil export-model --model RUN, or pass the run folder")
    return model, model.manifest.scorer["config"]


def _live_scorer(model: Any, cfg: WatchConfig, threshold: float | None) -> LiveScorer:
    """The scorer of :func:`watch`. An :class:`ExportedModel`: its graphs (the features those
    of ``cfg.exported`` when given), no PyTorch. A :class:`Detector`: I3D at the run's endpoint,
    grid and precision (``cfg``'s precision when given) on ``cfg.device`` through
    ``cfg.backend`` (:func:`stmil.deploy.backend.feature_extractor`)."""
    if isinstance(model, ExportedModel):
        features = (ExportedModel(cfg.exported, cfg.device, cfg.backend) if cfg.exported
                    else model)
        mc = model.manifest.scorer["config"]
        check_export(features.manifest, mc["endpoint"], mc["feature_grid"], mc["size"],
                     mc["clip_len"])
        return ExportedLiveScorer(model, features, threshold)
    # deferred: the network (I3D) loads when watching starts; WatchConfig alone needs none
    from stmil.deploy.backend import feature_extractor

    rc = model.config
    precision = cfg.precision or (rc.recorded.get("precision", "fp32")
                                  if cfg.backend == "torch" else "fp32")
    extractor = feature_extractor(cfg.backend, cfg.exported, rc.endpoint, rc.feature_grid,
                                  rc.size, rc.clip_len, cfg.device, precision)
    return LiveScorer(model, extractor, rc.feature_grid, threshold)


def _load_detector(run: str | Path) -> Detector:
    """The run's detector; :class:`ConfigError` when I3D cannot give the features it was
    trained on."""
    # deferred: the network's module loads when watching starts; WatchConfig alone needs none
    from stmil.features.i3d import endpoint_channels
    from stmil.mil.detector import Detector

    detector = Detector.load(run)
    rc = detector.config
    detector.check_scores_video()
    if rc.endpoint == "Logits" or rc.feature_grid > rc.size:
        raise ConfigError(f"{run}: trained on {rc.endpoint} grid {rc.feature_grid} "
                          f"features of {rc.size}-pixel frames, which I3D cannot give")
    detector.check_features({"endpoint": rc.endpoint, "size": rc.size,
                             "clip_len": rc.clip_len, "stride": rc.stride,
                             "grid": rc.feature_grid,
                             "channels": endpoint_channels(rc.endpoint)}, run)
    return detector


@dataclass(frozen=True)
class WatchSummary:
    """What a :func:`watch` did: how it ``ended`` (``end of input``, ``interrupted``,
    ``stopped`` or ``gave up``), the frames and clips it scored and dropped, how far it fell
    behind the stream (``max_behind_s``), its ``connections``, the ``incidents`` it reported
    (numbered from ``first_id``), the snapshots and clips it could not write
    (``evidence_errors``), its wall and scoring ``seconds``, and the median and 95th
    percentile of the delay from a clip's last frame to its scores (None without a clip)."""

    ended: str
    frames: int
    clips: int
    dropped_clips: int
    dropped_frames: int
    max_behind_s: float
    connections: int
    incidents: int
    first_id: int
    evidence_errors: int
    seconds: float
    score_seconds: float
    latency_median_s: float | None
    latency_p95_s: float | None

    @property
    def failed(self) -> bool:
        """Whether the command fails: the source was given up, or evidence went unwritten."""
        return self.ended == "gave up" or bool(self.evidence_errors)

    def line(self) -> str:
        errors = self.evidence_errors
        return (f"{self.ended}: {self.frames} frames, {self.clips} clips scored, "
                f"{self.dropped_frames} frames dropped, {self.incidents} incidents"
                + (f", {errors} snapshots or clips not written" if errors else ""))


def _summary(ended: str, stats: Stats, output: IncidentOutput, first_id: int,
             started: float) -> WatchSummary:
    """:func:`watch`'s return value."""
    lat = sorted(stats.latencies)
    return WatchSummary(
        ended=ended, frames=stats.frames, clips=stats.clips,
        dropped_clips=stats.dropped_clips, dropped_frames=stats.dropped_frames,
        max_behind_s=stats.max_behind, connections=stats.connections,
        incidents=output.tracker.next_id - first_id, first_id=first_id,
        evidence_errors=output.failures, seconds=time.monotonic() - started,
        score_seconds=stats.score_seconds,
        latency_median_s=lat[len(lat) // 2] if lat else None,
        latency_p95_s=lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None)


def _first_open(source: str, timeout: float):
    """Open the source, retrying a refused network connection until ``timeout`` has passed
    (a camera or server that is starting up); then :class:`StreamError`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_source(source, timeout)
        except StreamError as e:
            if not is_network(source) or "refused" not in str(e).lower() \
                    or time.monotonic() >= deadline:
                if is_network(source) and "refused" in str(e).lower():
                    raise StreamError(f"{e} for {timeout:g} s; check the URL, or raise "
                                      "--timeout") from None
                raise
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def settings_warnings(mc: dict, settings: dict, src_fps: float) -> list[str]:
    """One line per watch setting that differs from the run's clip settings, saying what it
    costs: another frame rate changes what I3D sees (the run was trained on clips of another
    duration); a stride above the clip length leaves frames unscored."""
    out = []
    run_fps, fps, clip = mc.get("resample_fps"), settings["fps"], settings["clip_len"]
    if fps != run_fps and not (run_fps is None and fps == src_fps):
        was = "the source's own rate" if run_fps is None else f"{run_fps:g} fps"
        out.append(f"--fps {fps:g}: the run's features were extracted at {was}; a "
                   f"{clip}-frame clip now spans {clip / fps:.2f} s of the scene, so scores differ "
                   "from the run's (docs/live.md: real time on 2 cores)")
    if settings["stride"] > clip:
        out.append(f"--stride {settings['stride']}: one {clip}-frame clip every "
                   f"{settings['stride']} frames; the frames between clips are never scored")
    return out


def heartbeat_line(stats: Stats, rate: float, fps: float, settings: dict) -> str:
    """One human line: frames, clips scored, clip rate achieved and needed, drops, latency."""
    need = (settings["fps"] or fps) / settings["stride"]
    lat = sorted(stats.latencies)
    med = f"{lat[len(lat) // 2]:.2f} s" if lat else "-"
    return (f"heartbeat: {stats.frames} frames, {stats.clips} clips scored ({rate:.2f} clips/s, "
            f"real time needs {need:.2f}), dropped {stats.dropped_frames} frames "
            f"({stats.dropped_clips} clips), latency {med}"
            + (f"; decoding {stats.behind:.1f} s behind the source (too slow even to read it)"
               if stats.behind >= 1.0 else ""))
