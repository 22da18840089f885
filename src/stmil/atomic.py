"""Atomic file writes: a temporary file beside the destination, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(dest: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``dest``, then rename it into place.

    The temporary name is hidden and ends in ``.tmp`` (``.<name>.XXXX.tmp``), so no glob for
    ``*.npy``, ``*.json`` or videos ever picks it up; writers must name their format
    explicitly (they all do). The result gets the usual
    permissions (0666 minus the umask). On any failure the temporary file is removed and
    ``dest`` is untouched. Returns ``dest``.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def check_writable(folder: Path | str) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it; else ``OSError``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=folder).close()
    except OSError as e:
        raise OSError(f"{folder}: output folder is not writable ({e.strerror or e})") from e
    return folder


def write_text(dest: Path | str, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``dest``."""
    return atomic_write(dest, lambda t: t.write_text(text, encoding="utf-8"))
