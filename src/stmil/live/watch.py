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
from urllib.parse import urlsplit

import numpy as np
import torch

from stmil.cuboids import cuboid_boxes, predicted_boxes
from stmil.errors import ConfigError, StmilError
from stmil.features.motion import motion_energy
from stmil.features.pipeline_config import check_fps
from stmil.features.video import _one_line, resample_indices, to_model_input
from stmil.files import av_path
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
from stmil.live.snapshot import describe, prepare_evidence_dir, snapshot_name, write_snapshot
from stmil.mil.detector import Detector

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp", "srt",
                   "rtp")


class StreamError(StmilError, ValueError):
    """A source that cannot be opened or is not a video; the message names it."""


@dataclass(frozen=True)
class WatchConfig:
    """How ``stmil watch`` reads and reports. Times in seconds."""

    realtime: bool = False  # a file: play it at its own frame rate (else as fast as possible)
    fps: float | None = None  # resample the source to this rate (None: the run's)
    stride: int | None = None  # score one clip every STRIDE (resampled) frames (None: the run's)
    drop: bool | None = None  # drop clips when busy; None: for live sources and --realtime
    heartbeat: float = 10.0  # seconds between heartbeat lines (0: none)
    update: float = 5.0  # seconds between update messages of an open incident (0: none)
    timeout: float = 10.0  # open and read timeout of a network source
    retries: int | None = None  # reconnections after a loss before giving up (None: forever)
    backoff: float = 0.5  # first reconnection delay, doubled up to max_backoff
    max_backoff: float = 10.0
    precision: str | None = None  # None: the run's
    device: str = "auto"

    def __post_init__(self) -> None:
        check_fps(self.fps)
        for name in ("heartbeat", "update", "backoff"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"--{name} must be a number of seconds >= 0, got {v!r}")
        for name in ("timeout", "max_backoff"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a number of seconds > 0, "
                                  f"got {v!r}")
        if self.max_backoff < self.backoff:
            raise ConfigError(f"--max-backoff must be at least --backoff ({self.backoff:g} s), "
                              f"got {self.max_backoff!r}")
        if self.stride is not None and (isinstance(self.stride, bool)
                                        or not isinstance(self.stride, int) or self.stride < 1):
            raise ConfigError(f"--stride must be a whole number of frames >= 1, "
                              f"got {self.stride!r}")
        if self.retries is not None and (isinstance(self.retries, bool) or self.retries < 0):
            raise ConfigError(f"--retries must be a whole number >= 0, got {self.retries!r}")


def is_network(source: str) -> bool:
    return source.split("://", 1)[0].lower() in NETWORK_SCHEMES if "://" in source else False


def is_camera(source: str) -> bool:
    return source.startswith("/dev/video")


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
    """A clip handed from the reader to the scorer: ``(3, T, S, S)`` frames in [-1, 1], its
    source frames ``[start, end)`` (counted over the whole watch), the raw middle frame
    ``(H, W, 3)`` for snapshots (its size is the one the clip's boxes are in: a stream may
    change size), and when its last frame arrived (``time.monotonic``)."""

    frames: torch.Tensor
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
                 offset: int, recorder=None, paced: bool = False):
        super().__init__(daemon=True)
        self.container, self.stream, self.src_fps = container, stream, src_fps
        self.s, self.out, self.stats, self.stop = settings, out, stats, stop
        self.drop, self.realtime, self.offset = drop, realtime, offset
        self.recorder = recorder  # a ClipRecorder fed every decoded frame, or None
        self.paced = paced or realtime  # a live source or --realtime: measure how far behind

    def run(self) -> None:
        import av

        s = self.s
        clip_len, stride, size = s["clip_len"], s["stride"], s["size"]
        window: deque[tuple[torch.Tensor, int, np.ndarray]] = deque(maxlen=clip_len)
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
                resized = to_model_input(rgb[None], size)[0]
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
        frames = torch.stack([f for f, _, _ in window], dim=1)
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
) -> dict:
    """Watch ``source`` with the run's model until it ends (a file), ``stop`` is set, Ctrl-C,
    or ``config.retries`` reconnections fail; returns a summary (``ended``: ``end of input``,
    ``interrupted``, ``stopped`` or ``gave up``, and the counters; ``evidence_errors``: the
    snapshots and clips that could not be written).

    Messages are JSON lines (``start``, ``update``, ``end``; see docs/live.md) given to
    ``emit`` (default: stdout, or nothing when ``out`` is given) and appended to ``out`` (one
    flushed write per line; a file holding anything but stmil incident lines is refused);
    heartbeat and connection lines are logged (``stmil.live.watch``, INFO). ``snapshots``: a
    folder for one JPEG per incident; ``clips``: a folder for one MP4 per incident (see
    :mod:`stmil.live.clip`: a pre-roll ring buffer, a cap on the clip's length); both are
    proved writable before the source is opened. Evidence files are named
    ``<name>.incident-NNN`` (:func:`source_name`; ``name`` overrides) and numbered after the
    incidents of earlier runs (:func:`first_incident_id`). Raises :class:`StreamError` when the
    source cannot be opened the first time (within ``config.timeout``).
    """
    # deferred: the network (I3D) loads when watching starts; WatchConfig alone needs none
    from stmil.features.extract import FeatureExtractor
    from stmil.features.i3d import endpoint_channels

    cfg = config or WatchConfig()
    name = source_name(source, name)
    log_path = Path(out) if out is not None else None
    if log_path is not None:
        check_log(log_path)
        open(log_path, "a", encoding="utf-8").close()  # writable: found now, not at an incident
    snap_dir = prepare_evidence_dir(snapshots) if snapshots is not None else None
    clip_dir = prepare_clips_dir(clips) if clips is not None else None
    first_id = first_incident_id(name, source, log_path,
                                 [d for d in (snap_dir, clip_dir) if d is not None])
    if emit is None:
        emit = (lambda line: None) if log_path is not None else (lambda line: print(line,
                                                                                   flush=True))
    detector = Detector.load(run)
    rc, mc = detector.config, detector.config.recorded
    detector.check_scores_video()
    if rc.endpoint == "Logits" or rc.feature_grid > rc.size:
        raise ConfigError(f"{run}: trained on {rc.endpoint} grid {rc.feature_grid} "
                          f"features of {rc.size}-pixel frames, which I3D cannot give")
    detector.check_features({"endpoint": rc.endpoint, "size": rc.size,
                             "clip_len": rc.clip_len, "stride": rc.stride,
                             "grid": rc.feature_grid,
                             "channels": endpoint_channels(rc.endpoint)}, run)
    settings = {"clip_len": rc.clip_len, "stride": cfg.stride or rc.stride, "size": rc.size,
                "fps": cfg.fps if cfg.fps is not None else mc.get("resample_fps"),
                "tail": rc.tail, "timeout": cfg.timeout}
    live = is_network(source) or is_camera(source)
    drop = cfg.drop if cfg.drop is not None else (live or cfg.realtime)
    stop = stop or threading.Event()
    stats = Stats()
    started = time.monotonic()
    recorder = ClipRecorder(clip_dir, name, source) if clip_dir is not None else None

    container, stream, fps, width, height = _first_open(source, cfg.timeout)
    for line in settings_warnings(mc, settings, fps):
        log.warning(line)
    try:
        precision = cfg.precision or mc.get("precision", "fp32")
        extractor = FeatureExtractor(rc.endpoint, rc.feature_grid, cfg.device, precision)
    except BaseException:
        container.close()
        raise
    grid_boxes: dict[tuple[int, int], np.ndarray] = {}  # (width, height) -> cuboid boxes
    tracker = IncidentTracker(events, fps, source, first_id=first_id)
    peaks: dict[int, tuple[float, np.ndarray]] = {}
    offset, failures, ended = 0, 0, None
    snapshot_failures = 0
    last_beat = last_update = time.monotonic()
    beat_clips = 0

    def put(line: str) -> None:
        if log_path is not None:  # opened for each line: a rotated log is followed
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        emit(line)

    def evidence(inc: Incident, now: bool) -> dict:
        """Finish the incident's clip and write its snapshot; ``{kind_error: why}`` for those
        that could not be written. ``now``: the input is over, commit the clip as it is."""
        nonlocal snapshot_failures
        errors = {}
        if recorder is not None:
            err = recorder.finish(inc.id, inc.end_frame, now=now)
            if err:
                errors["clip_error"] = err
        if snap_dir is not None and inc.id in peaks:
            try:
                write_snapshot(snap_dir / snapshot_name(name, inc.id), peaks.pop(inc.id)[1],
                               inc.box, f"#{inc.id} {inc.peak_score:.2f}", command="watch")
            except (OSError, StmilError) as e:
                errors["snapshot_error"] = describe(e)
                snapshot_failures += 1
                log.error("%s", f"incident snapshot not written: {errors['snapshot_error']}")
        return errors

    def send(kind: str, inc: Incident, latency: float | None, now: bool = False) -> None:
        extra: dict = {"wall_time": _now(), "connection": stats.connections,
                       "frame_offset": offset}
        if latency is not None:
            extra["latency_s"] = round(latency, 4)
        if kind == "end":
            extra.update(evidence(inc, now))
        put(incident_line(kind, inc, **extra))

    def close(reason: str) -> None:
        for kind, inc in tracker.close(reason):
            send(kind, inc, None, now=True)
        if recorder is not None:
            recorder.track(tracker.next_id, None)
            recorder.flush()

    reader: Reader | None = None
    try:
        while ended is None:
            stats.connections += 1
            if recorder is not None:
                recorder.connect(fps, width, height)
            q: queue.Queue = queue.Queue(maxsize=1)
            reader = Reader(container, stream, fps, settings, q, stats, stop, drop,
                            cfg.realtime and not live, offset, recorder, paced=live)
            reader.start()
            reason, lost_detail = None, ""
            while reason is None:
                if stop.is_set():
                    ended = "stopped"
                    break
                try:
                    item = q.get(timeout=0.1)
                except queue.Empty:
                    item = None
                now = time.monotonic()
                if isinstance(item, Clip):
                    failures = 0
                    t_score = time.monotonic()
                    x = item.frames[None]  # (1, 3, T, S, S)
                    feats = extractor(x).numpy().astype(np.float16)
                    maps = detector.maps(feats, motion_energy(x, rc.feature_grid))
                    stats.score_seconds += time.monotonic() - t_score
                    size = (item.middle.shape[1], item.middle.shape[0])  # this clip's
                    if size not in grid_boxes:
                        grid_boxes[size] = cuboid_boxes(*size, rc.feature_grid)
                    box = predicted_boxes(maps, grid_boxes[size], events.threshold)[0]
                    clip = ClipScore(item.start, item.end, maps[0], tuple(map(float, box)))
                    stats.clips += 1
                    latency = time.monotonic() - item.arrived
                    stats.latencies.append(latency)
                    for kind, inc in tracker.push(clip):
                        send(kind, inc, latency)
                    tid = tracker.next_id
                    if not tracker.clips:  # no candidate: forget a dropped one's peak frame
                        peaks.pop(tid, None)
                    if recorder is not None:
                        c = tracker.clips
                        recorder.track(tid, c[0].start if c else None,
                                       c[-1].end if c else 0)
                    if snap_dir is not None and any(c is clip for c in tracker.clips):
                        if tid not in peaks or clip.score > peaks[tid][0]:
                            peaks[tid] = (clip.score, item.middle)
                elif isinstance(item, tuple):
                    kind, detail = item
                    if kind == "error":
                        raise detail
                    reason = kind if kind == "lost" else "eof"
                    lost_detail = detail
                if cfg.update and now - last_update >= cfg.update:
                    last_update = now
                    if tracker.open is not None:
                        send("update", tracker.open, None)
                if cfg.heartbeat and now - last_beat >= cfg.heartbeat:
                    rate = (stats.clips - beat_clips) / (now - last_beat)
                    last_beat, beat_clips = now, stats.clips
                    log.info(heartbeat_line(stats, rate, fps, settings))
            if ended is not None:
                break
            if not live:
                ended = "end of input"
                close("end of input")
                break
            close("stream lost")
            offset = stats.frames  # the next connection's frames are counted after these
            why = lost_detail if reason == "lost" and lost_detail else "the stream ended"
            container = None
            while container is None:
                if cfg.retries is not None and failures >= cfg.retries:
                    log.info(f"{source}: stream lost ({why}); giving up after {failures} "
                             "reconnection attempts")
                    ended = "gave up"
                    break
                delay = min(cfg.max_backoff, cfg.backoff * 2 ** failures)
                failures += 1
                log.info(f"{source}: stream lost ({why}); reconnecting in {delay:.1f} s "
                         f"(attempt {failures})")
                if stop.wait(delay):
                    ended = "stopped"
                    break
                try:
                    container, stream, fps, width, height = open_source(source, cfg.timeout)
                except StreamError as e:
                    why = str(e).removeprefix(f"{source}: ")
            if container is not None:
                log.info(f"{source}: reconnected")
                tracker.fps = fps
    except KeyboardInterrupt:
        ended = "interrupted"
        close("interrupted")
    finally:
        stop.set()
        if reader is not None:  # a thread still in FFmpeg or torch at exit aborts the process
            reader.join(timeout=cfg.timeout + 5)
    if ended in ("stopped", "gave up"):
        close("stream lost" if ended == "gave up" else "interrupted")
    if recorder is not None:
        recorder.close()
    lat = sorted(stats.latencies)
    return {"ended": ended, "frames": stats.frames, "clips": stats.clips,
            "dropped_clips": stats.dropped_clips, "dropped_frames": stats.dropped_frames,
            "max_behind_s": stats.max_behind,
            "connections": stats.connections, "incidents": tracker.next_id - first_id,
            "first_id": first_id,
            "evidence_errors": snapshot_failures + (recorder.failures if recorder else 0),
            "seconds": time.monotonic() - started, "score_seconds": stats.score_seconds,
            "latency_median_s": lat[len(lat) // 2] if lat else None,
            "latency_p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None}


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
