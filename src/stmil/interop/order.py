"""The one video order of every interop output: a community list's, or the dataset's.

RTFM, MGFN and UR-DMU evaluate one flat vector of frames, concatenated in the order of their
test list, against a ``gt-ucf.npy`` written in that same order; a vector written in another
order gets a silently different AUC. ``stmil gt``, ``stmil export`` and ``stmil
export-features`` therefore take their order from here, and record it in their manifests:

- ``--list FILE``: the order of a list of those projects (``ucf-i3d-test.list``,
  ``UCF_Test.list``, ``Anomaly_Test.txt``; one path a line, a video's crop files
  ``<id>__<k>.npy`` on consecutive lines), which must name exactly the videos of the output;
- else the dataset's own list order (``Anomaly_Test.txt``'s for UCF-Crime);
- else (``export-features`` without ``--data``) the video ids sorted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stmil.errors import ConfigError

CROP_RE = re.compile(r"^(?P<id>.+)__(?P<crop>\d+)$")
#: Suffixes some projects add to the video id in feature file names.
ID_SUFFIXES = ("_i3d", "_c3d")
#: File extensions a list line may carry after the video id.
EXTENSIONS = (".npy", ".txt", ".mp4", ".avi", ".mkv", ".mov")


def split_name(name: str) -> tuple[str, int | None]:
    """``(video id, crop index or None)`` of a file name or path in any project's list:
    ``dataset/Abuse/Abuse028_x264__3.npy`` -> ``("Abuse028_x264", 3)``,
    ``G:\\feats\\Abuse028_x264_i3d.npy`` and ``Abuse/Abuse028_x264.mp4`` -> ``("Abuse028_x264",
    None)``."""
    stem = re.split(r"[\\/]", name.strip())[-1]
    for ext in EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    return stem_id(stem)


def stem_id(stem: str) -> tuple[str, int | None]:
    """``(video id, crop index or None)`` of a file stem: ``Abuse028_x264__3`` ->
    ``("Abuse028_x264", 3)``, ``Abuse001_x264_i3d`` -> ``("Abuse001_x264", None)``."""
    m = CROP_RE.match(stem)
    crop = None
    if m:
        stem, crop = m["id"], int(m["crop"])
    for suffix in ID_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem, crop


@dataclass(frozen=True)
class VideoList:
    """A community list read: its ``ids`` (each video once, in first-seen order) and each
    video's crop indices in list order (``[None]`` for a whole-video line)."""

    path: Path
    ids: tuple[str, ...]
    crops: dict[str, tuple[int | None, ...]] = field(default_factory=dict)
    sha256: str = ""

    def describe(self) -> dict:
        """The order's record in a manifest."""
        return {"rule": "list", "file": str(self.path.resolve()), "sha256": self.sha256,
                "videos": len(self.ids)}


def read_video_list(path: Path | str) -> VideoList:
    """Read a list (see the module docstring). :class:`ConfigError` naming the file and line
    when it is empty, not text, or names a video's lines apart (``a, b, a``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text list (not UTF-8 at byte {e.start}); give one "
                          "path a line") from None
    crops: dict[str, list[int | None]] = {}
    last = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        vid, crop = split_name(line)
        if not vid:
            raise ConfigError(f"{path}:{lineno}: no video name in {line!r}")
        if vid in crops and vid != last:
            raise ConfigError(f"{path}:{lineno}: {vid} again, apart from its first lines; a "
                              "list names each video once (its crops on consecutive lines)")
        if crop in crops.get(vid, ()):
            raise ConfigError(f"{path}:{lineno}: {line.strip()!r} repeats a line of {vid}")
        crops.setdefault(vid, []).append(crop)
        last = vid
    if not crops:
        raise ConfigError(f"{path}: no videos listed (one path a line expected)")
    return VideoList(path, tuple(crops), {k: tuple(v) for k, v in crops.items()},
                     hashlib.sha256(raw).hexdigest())


def _names(ids: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def check_same_videos(listed: VideoList, have: Sequence[str], what: str) -> None:
    """:class:`ConfigError` in one line unless ``listed`` names exactly the videos ``have``
    (``what``: where those come from, for the message)."""
    have_set, listed_set = set(have), set(listed.ids)
    extra = [v for v in listed.ids if v not in have_set]
    missing = [v for v in have if v not in listed_set]
    if extra:
        raise ConfigError(f"{listed.path}: lists {len(extra)} videos not in {what}: "
                          f"{_names(extra)}; use the list of the same split, or extract them")
    if missing:
        raise ConfigError(f"{listed.path}: does not list {len(missing)} videos of {what}: "
                          f"{_names(missing)}; use the list of the same split (or "
                          "--skip-missing where their features are missing)")


def in_list_order(ids: Sequence[str], listed: VideoList | None, what: str) -> list[str]:
    """``ids`` in ``listed``'s order (checked to be the same videos), or unchanged."""
    if listed is None:
        return list(ids)
    check_same_videos(listed, ids, what)
    return list(listed.ids)
