"""One short MP4 per incident: its frames at the source's size, with a pre- and post-roll.

A clip spans source frames ``[start - PRE_ROLL s, end + POST_ROLL s)`` of its incident, cut to
the input and to at most ``MAX_SECONDS`` (the incident's first ``MAX_SECONDS - PRE_ROLL``
seconds when it is longer). It is encoded with PyAV (libx264, or mpeg4 where the wheel has no
libx264) into a pid-named temporary file beside its destination (:func:`stmil.atomic.temp_path`)
and renamed into place when complete, so a kill leaves the old clip or the new one, and a dead
writer's temporary is recognised (and removed) by :func:`stmil.atomic.remove_stale_temps`.
Each clip carries the MP4 comment :data:`COMMENT` and is recorded in the folder's ownership
ledger; what may be replaced is :mod:`stmil.live.snapshot`'s rule for all evidence (``watch``
never replaces a file, ``events`` only its own). The title records the source and its frame
range.

**Reproducible bytes.** The encoder runs on one thread with fixed options (x264 output depends
on its thread count, which by default follows the machine's CPUs), so the same frames give the
same file on any machine with the same PyAV/FFmpeg build: ``stmil events`` reruns are identical
byte for byte.

:class:`ClipRecorder` is the live side (``stmil watch``): a ring buffer of the last
``RING_SECONDS`` of decoded frames (at most ``RING_BYTES``), from which a clip starts once the
scorer has seen an incident begin, then frames are encoded as they arrive, up to the
incident's last active frame plus the post-roll. Memory stays bounded by the ring; an incident
longer than the cap gets a clip of its first ``MAX_SECONDS - PRE_ROLL`` seconds, committed as
soon as it is complete.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stmil.atomic import naming, temp_path
from stmil.errors import StmilError
from stmil.features.video import iter_frames
from stmil.files import MP4_OPTIONS, av_path
from stmil.live.snapshot import check_evidence, commit_evidence, describe, prepare_evidence_dir

log = logging.getLogger(__name__)

COMMENT = "stmil incident clip"
PRE_ROLL = 2.0  # seconds of video before the incident's start
POST_ROLL = 1.0  # seconds after its end
MAX_SECONDS = 60.0  # the longest clip written
RING_SECONDS = 10.0  # live: decoded frames kept for the pre-roll while the scorer catches up
RING_BYTES = 256 * 2**20  # live: the ring's memory bound (fewer seconds for large frames)


def clip_name(video_id: str, incident_id: int) -> str:
    return f"{video_id}.incident-{incident_id:03d}.mp4"


def is_clip(path: Path) -> bool:
    """Whether ``path`` is an MP4 that stmil wrote as an incident clip."""
    import av

    try:
        with av.open(av_path(path)) as c:
            return c.metadata.get("comment") == COMMENT
    except (av.FFmpegError, OSError, ValueError):
        return False


def check_clip_dest(dest: Path, command: str = "events") -> None:
    """:class:`~stmil.errors.OutputError` when ``command`` may not write a clip at ``dest``
    (:func:`stmil.live.snapshot.check_evidence`)."""
    check_evidence(dest, command, is_clip, "incident clip", "--clips")


def prepare_clips_dir(folder: str | Path) -> Path:
    """Create the clips folder, prove it writable, remove the temporaries of dead writers."""
    return prepare_evidence_dir(folder)


def clip_range(start: int, end: int, fps: float, n_frames: int | None = None) -> tuple[int, int]:
    """Source frames ``[first, stop)`` of the clip of an incident ``[start, end)``."""
    first = max(0, start - round(PRE_ROLL * fps))
    stop = end + round(POST_ROLL * fps)
    if n_frames is not None:
        stop = min(stop, n_frames)
    return first, min(stop, first + max_frames(fps))


def max_frames(fps: float) -> int:
    return max(1, round(MAX_SECONDS * fps))


def _codec() -> str:
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except av.FFmpegError:
        return "mpeg4"


class ClipWriter:
    """Encode frames into a temporary MP4 beside ``dest``; :meth:`commit` renames it into
    place (recorded in the folder's ledger as ``command``'s), :meth:`abort` removes it. Frames
    are ``(H, W, 3)`` uint8 RGB arrays or ``av.VideoFrame`` objects of any size and format
    (converted to ``width`` x ``height``). An ``OSError`` names ``dest``, never the temporary."""

    def __init__(self, dest: Path, fps: float, width: int, height: int, title: str,
                 command: str = "events"):
        import av

        check_clip_dest(dest, command)
        self.dest, self.n, self.command = dest, 0, command
        rate = Fraction(fps).limit_denominator(1001)
        self.time_base = 1 / rate
        with naming(dest):
            self.tmp = temp_path(dest)
        try:
            with naming(dest):
                self.out = av.open(str(self.tmp), "w", format="mp4", options=MP4_OPTIONS)
            self.out.metadata["comment"] = COMMENT
            self.out.metadata["title"] = title
            codec = _codec()
            self.stream = self.out.add_stream(codec, rate=rate)
            self.stream.width, self.stream.height = width // 2 * 2, height // 2 * 2
            self.stream.pix_fmt = "yuv420p"
            # one thread: x264's output depends on its thread count (the module docstring)
            self.stream.codec_context.thread_count = 1
            opts = {"threads": "1"}
            if codec == "libx264":
                opts["preset"] = "veryfast"
            self.stream.options = opts
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

    def add(self, frame) -> None:
        import av

        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        frame.pts, frame.time_base = self.n, self.time_base
        with naming(self.dest):  # a full disk names the clip, not its temporary file
            for packet in self.stream.encode(frame):
                self.out.mux(packet)
        self.n += 1

    def commit(self) -> Path:
        try:
            with naming(self.dest):
                for packet in self.stream.encode():
                    self.out.mux(packet)
                self.out.close()
            commit_evidence(self.dest, lambda t: os.replace(self.tmp, t), self.command,
                            is_clip, "incident clip", "--clips")
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.dest

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - a half-written temporary is removed anyway
            pass
        self.tmp.unlink(missing_ok=True)


def write_clip(dest: Path, frames: Iterable[np.ndarray], fps: float, title: str,
               command: str = "events") -> int:
    """Write ``(H, W, 3)`` uint8 RGB frames as one clip at ``dest`` (atomically; see the module
    docstring); returns the number of frames written (none: nothing is written)."""
    writer = None
    try:
        for f in frames:
            if writer is None:
                writer = ClipWriter(dest, fps, f.shape[1], f.shape[0], title, command)
            writer.add(f)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        return 0
    writer.commit()
    return writer.n


def video_clip(dest: Path, source: str, start: int, end: int, fps: float) -> int:
    """The clip of incident frames ``[start, end)`` of a video file (see :func:`clip_range`);
    ``stmil events``' evidence."""
    first, stop = clip_range(start, end, fps)

    def frames():
        for k, frame in enumerate(iter_frames(source)):
            if k >= stop:
                return
            if k >= first:
                yield frame

    check_clip_dest(dest)
    return write_clip(dest, frames(), fps, f"{source} from frame {first}")


@dataclass
class _Recording:
    writer: ClipWriter | None
    dest: Path
    start: int  # the incident's first frame
    first: int  # the clip's first source frame
    next: int  # the next source frame to encode
    limit: int  # encode frames before this one
    closing: bool = False
    error: str | None = None  # why its clip could not be written (then nothing more is)


class ClipRecorder:
    """Live clips (``stmil watch``). The reader thread calls :meth:`feed` with every decoded
    source frame; the scorer calls :meth:`track` after each clip while an incident candidate is
    open (and once more when it is dropped), :meth:`finish` at its end and :meth:`flush` when
    the input ends or is lost.

    A clip that cannot be written (a full disk, a file in the way) never stops the watch: it
    is logged (``error:``), counted in :attr:`failures` and returned by :meth:`finish` for the
    incident's ``end`` line; nothing of it is left in the folder."""

    def __init__(self, folder: Path, name: str, source: str):
        self.folder, self.name, self.source = folder, name, source
        self.fps = 0.0
        self.ring: deque = deque()
        self.ring_len = 1
        self.rec: dict[int, _Recording] = {}
        self.lock = threading.Lock()
        self.failures = 0  # incidents whose clip could not be written

    def connect(self, fps: float, width: int, height: int) -> None:
        """A (re)connection: the ring is sized for this stream's rate and frame size."""
        with self.lock:
            self.fps = fps
            by_time = math.ceil(RING_SECONDS * fps)
            by_bytes = RING_BYTES // max(1, width * height * 3 // 2)  # yuv420p frames
            self.ring_len = max(1, min(by_time, by_bytes))
            self.ring = deque(self.ring, maxlen=self.ring_len)

    def feed(self, index: int, frame) -> None:
        """One decoded source frame (``av.VideoFrame``), ``index`` counted over the watch."""
        with self.lock:
            self.ring.append((index, frame))
            for iid, r in list(self.rec.items()):
                self._step(iid, r)

    def track(self, iid: int, start: int | None, last_end: int = 0) -> None:
        """The candidate or open incident ``iid`` spans source frames ``[start, last_end)``
        so far (``start`` None: there is none, and a clip begun for it is removed)."""
        with self.lock:
            r = self.rec.get(iid)
            if r is not None and r.closing:
                return
            if r is not None and r.start != start:  # a dropped candidate, or a new one
                self._drop(iid)
                r = None
            if start is None:
                return
            limit = last_end + round(POST_ROLL * self.fps)
            if r is None:
                first = max(0, start - round(PRE_ROLL * self.fps))
                r = _Recording(None, self.folder / clip_name(self.name, iid), start, first,
                               first, limit)
                self.rec[iid] = r
                try:
                    check_clip_dest(r.dest, "watch")
                except (OSError, StmilError) as e:
                    self._fail(r, e)
            r.limit = max(r.limit, limit)
            self._step(iid, r)

    def finish(self, iid: int, end: int, now: bool = False) -> str | None:
        """Incident ``iid`` ended at source frame ``end``: its clip is committed once the
        post-roll has arrived, or ``now`` with the frames it has (the input is over). Returns
        the error of its clip when one is known by then (a later one, while the post-roll is
        written, is logged and counted only)."""
        with self.lock:
            r = self.rec.get(iid)
            if r is None:
                return None
            failed_before = r.error is not None
            r.limit, r.closing = end + round(POST_ROLL * self.fps), True
            self._step(iid, r)
            if now and self.rec.get(iid) is r:
                self._commit(iid, r)
            if r.error is not None:
                self.rec.pop(iid, None)
                self.failures += failed_before  # a failure while closing counted itself
            return r.error

    def abort(self, iid: int) -> None:
        with self.lock:
            self._drop(iid)

    def flush(self) -> None:
        """The input ended or was lost: commit every closing clip with the frames it has."""
        with self.lock:
            for iid, r in list(self.rec.items()):
                if r.closing:
                    self._commit(iid, r)

    def close(self) -> None:
        """Stop: commit closing clips, remove unfinished ones."""
        self.flush()
        for iid in list(self.rec):
            self.abort(iid)

    def _drop(self, iid: int) -> None:
        r = self.rec.pop(iid, None)
        if r is not None and r.writer is not None:
            r.writer.abort()

    def _fail(self, r: _Recording, e: BaseException) -> None:
        """Give up ``r``'s clip (its temporary removed) and say why."""
        if r.writer is not None:
            r.writer.abort()
            r.writer = None
        r.error = describe(e)
        self.failures += r.closing
        log.error("%s", f"incident clip not written: {r.error}")

    def _step(self, iid: int, r: _Recording) -> None:
        if r.error is None:
            try:
                self._write(iid, r)
            except (OSError, StmilError) as e:
                self._fail(r, e)

    def _write(self, iid: int, r: _Recording) -> None:
        stop = min(r.limit, r.first + max_frames(self.fps))
        for index, frame in self.ring:
            if r.next <= index < stop:
                if r.writer is None:
                    r.first = index  # the ring may no longer hold the whole pre-roll
                    r.writer = ClipWriter(r.dest, self.fps, frame.width, frame.height,
                                          f"{self.source} from frame {index}", "watch")
                r.writer.add(frame)
                r.next = index + 1
        if r.writer is not None and r.next >= r.first + max_frames(self.fps):
            writer, r.writer = r.writer, None
            self._commit_writer(r, writer)  # the cap: complete while the incident goes on
        if r.closing and r.next >= stop:
            self._commit(iid, r)

    def _commit(self, iid: int, r: _Recording) -> None:
        self.rec.pop(iid, None)
        if r.writer is not None and r.error is None:
            writer, r.writer = r.writer, None
            self._commit_writer(r, writer)

    def _commit_writer(self, r: _Recording, writer: ClipWriter) -> None:
        try:
            writer.commit()
        except (OSError, StmilError) as e:
            writer.abort()
            self._fail(r, e)
