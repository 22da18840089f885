"""Atomic file writes: a temporary file beside the destination, then a rename.

Temporary files are hidden and carry the writer's process id:
``.<name>.<pid>.<random>.tmp``. A writer killed mid-write leaves one behind;
:func:`remove_stale_temps` deletes exactly those whose writer is no longer running.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)

# ``.<name>.<pid>.<8 random chars from tempfile>.tmp``
TEMP_PATTERN = re.compile(r"\.(?P<name>.+)\.(?P<pid>[1-9]\d{0,9})\.(?P<rand>[a-z0-9_]{8})\.tmp")

#: The longest file name, in bytes, of Linux, macOS and Windows file systems.
NAME_MAX = 255


def fit_name(stem: str, suffix: str) -> str:
    """``stem + suffix`` if it fits in :data:`NAME_MAX` bytes; else ``stem`` cut short,
    ``~`` and 16 hex digits of its SHA-256, then ``suffix`` (distinct stems stay distinct).

    The one rule for the names stmil derives from a user's (a 250-character video's
    ``<id>.claim``, the temporaries of its outputs): the output's own name is the user's
    choice, and is refused by the system (in one line naming it) only when it is too long.
    """
    if len(os.fsencode(stem + suffix)) <= NAME_MAX:
        return stem + suffix
    raw = os.fsencode(stem)
    digest = hashlib.sha256(raw).hexdigest()[:16]
    cut = raw[:NAME_MAX - len(os.fsencode(suffix)) - 1 - len(digest)]
    while cut:  # never split a UTF-8 character: the name stays valid text
        try:
            text = cut.decode("utf-8")
            break
        except UnicodeDecodeError:
            cut = cut[:-1]
    else:
        text = ""
    return f"{text}~{digest}{suffix}"


def temp_path(dest: Path | str) -> Path:
    """Create (empty, with the usual permissions) and return a temporary file beside ``dest``.

    Its name, ``.<name>.<pid>.<random>.tmp``, matches :data:`TEMP_PATTERN`, so
    :func:`remove_stale_temps` can tell when its writer has died; where ``dest``'s name is
    too long for that, ``<name>`` is shortened by :func:`fit_name`.
    """
    dest = Path(dest)
    pid = os.getpid()
    tail = f".{pid}.{'r' * 8}.tmp"  # the length of what mkstemp appends
    head = fit_name(f".{dest.name}", tail)[:-len(tail)]
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f"{head}.{pid}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def output_name(path: Path, dest: Path, staging: Path | None = None) -> Path | None:
    """The output that a temporary ``path`` stands for, or ``None`` if it is no temporary.

    The one rule that maps temporaries to the names a user knows: a hidden temporary file
    (:data:`TEMP_PATTERN`) is ``dest``; with a ``staging`` folder (a run trained beside its
    ``--out``, a ledger's ``.stmil/``), the folder is ``dest`` and a file below it is that file
    below ``dest``, its temporary name (if any) undone
    (``.run.stmil-staging/.config.yaml.<pid>.<rand>.tmp`` -> ``run/config.yaml``).
    """
    if staging is not None and (path == staging or staging in path.parents):
        rel = path.relative_to(staging)
        m = TEMP_PATTERN.fullmatch(rel.name)
        return dest / (rel.with_name(m["name"]) if m else rel) if rel.parts else dest
    return dest if TEMP_PATTERN.fullmatch(path.name) else None


def _named(e: OSError, dest: Path, staging: Path | None = None) -> OSError:
    """``e`` naming ``dest`` instead of nothing or a temporary (same errno and reason; see
    :func:`output_name`)."""
    name = e.filename
    if not e.errno:
        return e
    if name is None:
        target: Path | None = dest
    elif isinstance(name, (str, bytes, os.PathLike)):
        target = output_name(Path(os.fsdecode(name)), dest, staging)
    else:
        target = None
    if target is None:
        return e
    # OSError(errno, ...) is the errno's subclass (FileNotFoundError...); PyAV's own error
    # classes take other arguments
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(target))


def atomic_write(dest: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``dest``, then rename it into place.

    The temporary name is hidden and ends in ``.tmp`` (see :func:`temp_path`), so no glob for
    ``*.npy``, ``*.json`` or videos ever picks it up; writers must name their format
    explicitly (they all do). The result gets the usual permissions (0666 minus the umask).
    On any failure the temporary file is removed and ``dest`` is untouched; an ``OSError``
    (a full disk, say) names ``dest``, never the temporary file. Returns ``dest``.
    """
    atomic_write_group([(dest, write)])
    return dest


def atomic_write_group(writes: Sequence[tuple[Path | str, Callable[[Path], None]]],
                       before_renames: Callable[[], None] | None = None) -> None:
    """Write several files as one unit: every ``write(tmp)`` first, in order, then the renames.

    The renames run in reverse order, so the last file written (one that describes the
    others, such as a JSON recording their checksums) is renamed into place first. A failure
    while writing leaves every destination untouched and removes all temporary files; only a
    kill between two renames can leave a mix, which the describing file lets readers detect.
    An ``OSError`` names the destination being written. ``before_renames`` (a ledger's journal
    line, say) runs once every file is written, before the first rename.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for dest, write in writes:
            with naming(dest):
                tmp = temp_path(dest)
                temps.append((Path(dest), tmp))
                write(tmp)
        if before_renames is not None:
            before_renames()
        for dest, tmp in reversed(temps):
            with naming(dest):
                os.replace(tmp, dest)
    finally:
        for _, t in temps:
            t.unlink(missing_ok=True)


@contextmanager
def locked(folder: Path | str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (which must exist) while inside, so that
    concurrent writers of one folder take turns (POSIX; elsewhere there is no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def naming(dest: Path | str, staging: Path | str | None = None) -> Iterator[None]:
    """Context: an ``OSError`` raised inside that names no file or a temporary (a full disk
    while writing ``dest``'s temporary, a read-only folder refusing a staging folder) is
    raised again naming the output (same errno and reason; the mapping is
    :func:`output_name`'s); for writers that manage their own temporary file (a video
    encoder) or folder (``staging``: a run trained beside its ``--out``)."""
    try:
        yield
    except OSError as e:
        named = _named(e, Path(dest), None if staging is None else Path(staging))
        if named is e:
            raise
        raise named from e


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(folder: Path | str) -> list[Path]:
    """Delete the temporary files of dead writers in ``folder`` (not recursive); return them.

    Only hidden files named like :func:`temp_path`'s (``.<name>.<pid>.<random>.tmp``) whose
    pid is not a running process are removed; anything else, and the temporary files of live
    writers, is left alone. A missing folder has none.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        m = TEMP_PATTERN.fullmatch(entry.name)
        if not m or not entry.is_file(follow_symlinks=False) or _alive(int(m["pid"])):
            continue
        path = Path(entry.path)
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def check_writable(folder: Path | str) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it; else ``OSError``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OSError(f"{folder}: exists and is not a folder; choose another output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temp_path(folder / "writable").unlink()  # pid-named: a kill here leaves nothing lasting
    except OSError as e:
        raise OSError(f"{folder}: output folder is not writable ({e.strerror or e})") from e
    return folder


def write_text(dest: Path | str, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``dest``."""
    return atomic_write(dest, lambda t: t.write_text(text, encoding="utf-8"))


def write_bytes(dest: Path | str, data: bytes) -> Path:
    """Atomically write ``data`` to ``dest``."""
    return atomic_write(dest, lambda t: t.write_bytes(data))
