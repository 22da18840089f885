"""Which files under the served folder a browser may fetch, and how paths are shown.

Every path a request names is resolved here and nowhere else: it must be relative, made of
plain names (no ``..``, no hidden ``.name`` part, no backslash, no drive), resolve (symlinks
followed) to a regular file inside the served folder, and have a media suffix of
:data:`MEDIA_TYPES`. Anything else is ``None`` (the app answers 404).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import quote

#: The files the viewer serves, by suffix: videos, overlays, snapshots.
MEDIA_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg",
    ".mov": "video/quicktime", ".mkv": "video/x-matroska", ".avi": "video/x-msvideo",
    ".ts": "video/mp2t", ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".flv": "video/x-flv",
    ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".png": "image/png",
}
#: Suffixes a browser's ``<video>`` element plays (H.264/VP9/AV1 in MP4, WebM or Ogg).
BROWSER_VIDEO = (".mp4", ".m4v", ".webm", ".ogv", ".mov")


def media_file(root: Path, rel: str) -> Path | None:
    """The file ``rel`` (a URL path, percent-decoded, ``/``-separated) names under ``root``
    (resolved), or None when it may not be served (see the module docstring)."""
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return None
    parts = PurePosixPath(rel).parts
    if not parts or any(p in ("..", ".") or p.startswith(".") or ":" in p for p in parts):
        return None
    if Path(parts[-1]).suffix.lower() not in MEDIA_TYPES:
        return None
    real = Path(os.path.realpath(root.joinpath(*parts)))
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


def inside(root: Path, path: str | Path | None) -> Path | None:
    """``path`` resolved when it lies inside ``root`` (resolved), else None."""
    if path is None or str(path) == "":
        return None
    p = Path(path)
    real = Path(os.path.realpath(p if p.is_absolute() else root / p))
    return real if real.is_relative_to(root) else None


def media_url(root: Path, path: str | Path | None) -> str | None:
    """The ``/media/...`` URL of a file inside ``root`` that :func:`media_file` serves, else
    None."""
    real = inside(root, path)
    if real is None:
        return None
    rel = real.relative_to(root).as_posix()
    if media_file(root, rel) is None:
        return None
    return "/media/" + quote(rel)


def shown(root: Path, path: object) -> object:
    """A path as the pages show it: relative to ``root`` when inside it, else its last two
    parts after ``.../`` (a machine's absolute paths are not the reader's business); anything
    that is not a path string is returned as is."""
    if not isinstance(path, str) or not path.startswith(("/", "~")) or "\n" in path:
        return path
    real = inside(root, path)
    if real is not None:
        return real.relative_to(root).as_posix() or "."
    tail = PurePosixPath(path).parts[-2:]
    return ".../" + "/".join(tail)
