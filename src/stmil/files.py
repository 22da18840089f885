"""Which files are videos, finding them below a folder, and when two names are one file: the
one definition of each."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif", ".m4v", ".mpg", ".mpeg",
                    ".flv")  #: matched in any case (``.MP4`` too)
#: PyAV container options of every MP4 stmil writes (overlays, incident clips, synthetic
#: videos, the viewer's proxies): the index (``moov``) before the data (``mdat``), "fast start",
#: so a browser plays and seeks the file while it downloads.
MP4_OPTIONS = {"movflags": "+faststart"}


def av_path(path: Path | str) -> str:
    """``path`` as FFmpeg (PyAV) must be given it: absolute.

    FFmpeg reads a name whose first ``/`` comes after a ``:`` as a URL, so a relative
    ``10:30.mp4`` or ``cam:1/a.mp4`` would fail with "Protocol not found"; an absolute path
    starts with ``/`` and is always a file.
    """
    return os.path.abspath(path)


#: File systems the kernel makes up (``/proc``, ``/sys``, ``/dev``, ...): no videos live there,
#: and ``/proc`` reaches every process's working folder again (``/proc/self/cwd/...``).
PSEUDO_FILE_SYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "mqueue", "hugetlbfs", "configfs", "fusectl", "binfmt_misc",
    "autofs", "efivarfs", "rpc_pipefs", "nsfs",
})


def pseudo_mounts(mounts: Path | str = "/proc/self/mounts") -> frozenset[str]:
    """The mount points of :data:`PSEUDO_FILE_SYSTEMS`, read from ``mounts`` (none where the
    table cannot be read: not Linux)."""
    try:
        lines = Path(mounts).read_text(errors="replace").splitlines()
    except OSError:
        return frozenset()
    fields = (line.split() for line in lines)
    # the table escapes a space in a mount point as \040
    return frozenset(f[1].replace("\\040", " ") for f in fields
                     if len(f) > 2 and f[2] in PSEUDO_FILE_SYSTEMS)


def find_videos(folder: Path | str) -> list[Path]:
    """Every video file below ``folder``, sorted: recursive, symlinks followed once.

    A video ends in one of :data:`VIDEO_EXTENSIONS` (any case); hidden files and folders (a
    leading ``.``) are skipped, as are a symlink loop, a second link to a folder already
    walked, and the kernel's pseudo file systems (``stmil extract /`` reads no ``/proc``).
    """
    found: list[Path] = []
    visited: set[str] = set(pseudo_mounts())
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop, a second link to the same folder, or /proc
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath) / name
            for name in filenames
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
        ]
    return sorted(found)


def unique_files(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without the later names of a file already named, in order.

    Two names are one file when their real paths (symlinks and ``..`` resolved) are equal:
    ``../bad/f16.mp4`` and ``./../bad/f16.mp4``, or a symlink and its target. A symlink loop
    resolves to itself and is kept, for the reader to refuse. Every command that takes a
    list of files (``extract``, ``score``) processes each file once by this rule.
    """
    seen: set[str] = set()
    out: list[Path] = []
    for path in paths:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


def one_line(e: BaseException) -> str:
    """An FFmpeg error as a short phrase: no errno prefix, no repeated file name."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    return re.sub(r": '[^']*'$", "", text)
