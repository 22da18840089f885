"""Claim files: several extraction processes on one output folder split the videos.

Before a video is extracted, its process takes ``<out>/<id>.claim``: it opens (creating it
whole, with its marker line, if needed) that file and holds an exclusive, non-blocking
``fcntl.flock`` on it until the video's outputs are committed; then it deletes the file and
lets go. A process that finds the claim locked leaves the video to its holder. The lock dies
with its process, so the claim of a killed run is simply taken over (its file is reused, then
deleted). A file of that name without the marker (an empty one too) is the user's: refused,
never written or deleted. After taking a claim the caller checks again whether the video is
already finished (another process may have just committed it), so no video is extracted twice
by runs that do not ``--overwrite``.

Whether ``flock`` works across machines depends on the shared file system (Linux NFSv4 maps it
to byte-range locks); on a local disk it always does.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from stmil.atomic import fit_name, naming, temp_path
from stmil.errors import OutputError

CLAIM_SUFFIX = ".claim"
_MARK = "stmil-claim"


@dataclass
class Claim:
    """A held claim: ``path`` is the claim file, ``fd`` the open, locked descriptor."""

    path: Path
    fd: int

    def release(self) -> None:
        """Delete the claim file (still locked, so no one else is inside) and unlock it."""
        if self.fd < 0:
            return
        # forget the fd before closing it: a Ctrl-C between the close and the forgetting made
        # the release that follows (the run's clean-up) close it again (EBADF, or another
        # file's fd by then); an interrupt before the close at worst leaks the fd, whose lock
        # the exiting process drops
        fd, self.fd = self.fd, -1
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def claim_path(out_dir: Path | str, video_id: str) -> Path:
    """``<out_dir>/<id>.claim``, its name shortened by :func:`~stmil.atomic.fit_name` when a
    long video id would pass the file-name limit."""
    return Path(out_dir) / fit_name(video_id, CLAIM_SUFFIX)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def try_claim(out_dir: Path | str, video_id: str) -> Claim | None:
    """Take ``<out_dir>/<id>.claim``, or ``None`` when a live process holds it.

    :class:`OutputError` naming the file when a file of that name is not a stmil claim (it is
    then never written or deleted); an ``OSError`` (a read-only folder) names the file too.
    """
    return _take(claim_path(out_dir, video_id))


def _take(path: Path) -> Claim | None:
    """Take the claim file ``path`` (see :func:`try_claim`)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            _create(path)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    return None
                raise
            if not _same_file(fd, path):  # released and deleted meanwhile: claim afresh
                os.close(fd)
                continue
            if _MARK.encode() not in os.pread(fd, 4096, 0):  # empty: the user's too
                raise OutputError(f"{path}: exists and is not a stmil claim file; move it "
                                  "away (stmil extract uses <id>.claim to share work between "
                                  "processes)")
            note = _note()
            os.pwrite(fd, note, 0)  # the marker stays in the file at every instant
            os.ftruncate(fd, len(note))
            return Claim(path, fd)
        except BaseException:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            raise


def _note() -> bytes:
    """A claim file's contents: the marker, this host and process."""
    return json.dumps({_MARK: 1, "host": socket.gethostname(), "pid": os.getpid()}).encode() \
        + b"\n"


def _create(path: Path) -> None:
    """Create the claim file ``path`` whole, marker included (a written temporary, hard-linked
    into place), so a kill never leaves an empty claim; one already there is left alone."""
    with naming(path):  # a full disk names the claim, not its temporary
        tmp = temp_path(path)
        try:
            tmp.write_bytes(_note())
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)


def remove_stale_claims(out_dir: Path | str) -> list[Path]:
    """Delete the claim files of dead processes in ``out_dir`` (unlocked stmil claims).

    Claims held by live processes and files that are not stmil claims are left alone.
    """
    removed: list[Path] = []
    try:
        names = [p for p in Path(out_dir).iterdir() if p.name.endswith(CLAIM_SUFFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for p in names:
        try:
            claim = _take(p)
        except (OutputError, OSError):
            continue
        if claim is not None:
            claim.release()
            removed.append(p)
    return removed
