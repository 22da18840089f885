"""Transcoded proxies: an H.264 MP4 copy of a video a browser cannot play (AVI, MPEG-TS...).

A proxy is made once per source file, on the first request for it, and cached as
``DIR/.stmil/proxies/<key>.mp4``, where ``<key>`` is 16 hex digits of the SHA-256 of the
source's path below ``DIR``, its size and its modification time (a changed source gets a new
proxy). It is the only thing ``stmil serve`` writes, under the ownership rules of every stmil
output (:mod:`stmil.ownership`): committed whole with the proxies folder's ledger (a kill
leaves no half proxy), and a file of that name that the ledger does not prove stmil's is left
alone: the proxy is not made and the page says why.

The proxy holds every decoded frame (:func:`stmil.features.video.iter_frames`, the decoder
features are made from) at the source's average frame rate, so frame ``f`` is shown at
``f / fps`` as on every page; it is written by the synthetic benchmark's H.264 writer
(:class:`stmil.synth.write.VideoWriter`: yuv420p, fast start).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from stmil.errors import OutputError
from stmil.features.video import iter_frames, probe
from stmil.ownership import Ledger, commit

#: Where proxies are cached, below the served folder.
PROXIES = Path(".stmil") / "proxies"
FIX = "move that file away to let stmil serve make the browser copy there"

_locks: dict[Path, threading.Lock] = {}
_locks_lock = threading.Lock()


def proxy_path(root: Path, source: Path) -> Path:
    """Where the proxy of ``source`` (a file inside ``root``, both resolved) is cached."""
    st = source.stat()
    rel = source.relative_to(root).as_posix()
    key = hashlib.sha256(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return root / PROXIES / f"{key}.mp4"


def proxy_problem(root: Path, source: Path) -> str | None:
    """Why the proxy of ``source`` cannot be made (a file in its place that is not stmil's),
    else None; nothing is written."""
    dest = proxy_path(root, source)
    if not os.path.lexists(dest):
        return None
    try:
        Ledger.load(dest.parent).check_replaceable(dest, fix=FIX)
    except OutputError as e:
        return " ".join(str(e).split())
    return None


def ensure_proxy(root: Path, source: Path) -> Path:
    """The proxy of ``source``, made now if it is not cached yet (see the module docstring);
    :class:`OutputError` naming the file in its place when that is not stmil's."""
    dest = proxy_path(root, source)
    with _locks_lock:
        lock = _locks.setdefault(dest, threading.Lock())
    with lock:
        if os.path.lexists(dest) and Ledger.load(dest.parent).owns(dest.name):
            return dest
        problem = proxy_problem(root, source)
        if problem is not None:
            raise OutputError(problem)
        dest.parent.mkdir(parents=True, exist_ok=True)
        commit(dest.parent, [(dest, lambda tmp: transcode(source, tmp))], "serve", fix=FIX)
        return dest


def transcode(source: Path, out: Path) -> int:
    """Write every frame of ``source`` to ``out`` as an H.264 MP4 at its average frame rate
    (an odd width or height loses its last column or row); returns the number of frames."""
    from stmil.synth.write import VideoWriter  # deferred: PyAV loads when a proxy is made

    info = probe(source)
    frames = iter_frames(source, info)
    first = next(frames, None)
    if first is None:
        raise OutputError(f"{source}: no frames to make a browser copy of")
    h, w = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2  # upright: rotation applied
    n = 0
    with VideoWriter(out, w, h, Fraction(info.fps).limit_denominator(1001),
                     place=os.replace) as writer:
        for frame in itertools.chain([first], frames):
            writer.write(np.ascontiguousarray(frame[:h, :w]))
            n += 1
    return n
