"""One JPEG per incident (its peak frame with the incident's box drawn, Pillow), and the rule
for every piece of incident evidence (snapshots and clips).

**Evidence is never replaced by another command's, nor is a user's file.** Each evidence folder
carries the ownership ledger (:mod:`stmil.ownership`). ``stmil watch`` never replaces any
file: its incident numbers continue after the highest of the folder (see
:func:`stmil.live.watch.first_incident_id`), so a file in its way was put there meanwhile and
is refused. ``stmil events`` replaces only a file that the ledger names as ``events``' with
unchanged bytes (its own earlier run); in a folder from before ledgers, a file carrying the
evidence comment (:data:`COMMENT` for a snapshot). Anything else is refused with one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stmil.atomic import check_writable, remove_stale_temps
from stmil.errors import OutputError
from stmil.ownership import Ledger, commit

COMMENT = b"stmil incident snapshot"
COMMANDS = ("events", "watch")  # the commands that write evidence


def is_snapshot(path: Path) -> bool:
    """Whether ``path`` is a JPEG that :func:`write_snapshot` wrote (its comment)."""
    try:
        with Image.open(path) as im:
            return im.format == "JPEG" and im.info.get("comment") == COMMENT
    except (OSError, ValueError):
        return False


def snapshot_name(video_id: str, incident_id: int) -> str:
    return f"{video_id}.incident-{incident_id:03d}.jpg"


def prepare_evidence_dir(folder: str | Path) -> Path:
    """Create an evidence folder, prove a file can be written in it (``OSError`` naming the
    folder: found at the start, not at the first incident) and remove the temporaries of dead
    writers in it."""
    folder = check_writable(folder)
    remove_stale_temps(folder)
    return folder


def check_evidence(dest: Path, command: str, legacy: Callable[[Path], bool], what: str,
                   flag: str) -> None:
    """:class:`OutputError` naming ``dest`` when ``command`` may not write it (see the module
    docstring); ``what`` (``incident clip``...) and ``flag`` (``--clips``) word the message."""
    if command not in COMMANDS:
        raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
    if not os.path.lexists(dest):
        return
    fix = f"move it away, or use another {flag} folder"
    if command == "watch":
        raise OutputError(f"{dest}: exists; stmil watch never replaces a file (its incident "
                          f"numbers continue after the folder's highest); {fix}")
    ledger = Ledger.load(dest.parent)
    if not ledger.owns(dest.name, legacy):
        raise OutputError(f"{dest}: exists and is not a stmil {what}; refusing to overwrite it "
                          f"({fix})")
    wrote = ledger.files.get(dest.name, {}).get("command", command)
    if wrote != command:
        raise OutputError(f"{dest}: is the evidence of stmil {wrote}, which stmil {command} "
                          f"never replaces; {fix}")


def commit_evidence(dest: Path, write: Callable[[Path], None], command: str,
                    legacy: Callable[[Path], bool], what: str, flag: str) -> Path:
    """Check ``dest`` (:func:`check_evidence`), then write it with ``write(tmp)`` and record it
    in its folder's ledger, as one atomic commit. An ``OSError`` names ``dest``."""
    check_evidence(dest, command, legacy, what, flag)
    commit(dest.parent, [(dest, write)], command, legacy=legacy,
           fix=f"move it away, or use another {flag} folder")
    return dest


def describe(e: BaseException) -> str:
    """One line for an evidence error (an ``OSError`` as ``file: reason``)."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return " ".join(str(e).split())


def write_snapshot(dest: Path, frame: np.ndarray, box: list[float], label: str,
                   command: str = "events") -> Path:
    """Atomically write ``frame`` ``(H, W, 3)`` uint8 RGB with ``box`` (x1, y1, x2, y2, source
    pixels) in red and ``label`` above it, recorded in the folder's ledger as ``command``'s; a
    file at ``dest`` that ``command`` may not replace is refused (:class:`OutputError`)."""
    check_evidence(dest, command, is_snapshot, "incident snapshot", "--snapshots")
    im = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    x1, y1, x2, y2 = box
    width = max(2, round(min(im.size) / 120))
    draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=(255, 0, 0), width=width)
    draw.text((x1 + 2, max(0, y1 - 12)), label, fill=(255, 0, 0))
    buf = BytesIO()
    im.save(buf, format="JPEG", quality=90, comment=COMMENT)
    data = buf.getvalue()
    return commit_evidence(dest, lambda t: t.write_bytes(data), command, is_snapshot,
                           "incident snapshot", "--snapshots")
