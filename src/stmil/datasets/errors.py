"""The error every dataset loader raises, and the helpers that give it a precise position.

A malformed line is reported as ``"<file>:<line>: <what was expected>, got <the line>"`` so
that an editor or terminal can jump straight to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from stmil.datasets.record import VideoRecord
from stmil.errors import StmilError

SPLITS = ("train", "test", "all")


class DatasetError(StmilError, ValueError):
    """A dataset folder or annotation file that cannot be read as the expected format."""


def check_split(split: str) -> None:
    """Refuse a split name other than ``"train"``, ``"test"`` or ``"all"``."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def malformed(path: Path, lineno: int, expected: str, line: str) -> DatasetError:
    """The error for one bad line: ``"<path>:<lineno>: <expected>, got '<line>'"``."""
    return DatasetError(f"{path}:{lineno}: {expected}, got {line!r}")


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, stripped text)`` for every non-blank line of a text file.

    Line numbers are 1-based and count blank lines, so they match what an editor shows.
    CRLF and CR line ends, a UTF-8 byte-order mark and surrounding whitespace are tolerated.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # text mode: \r\n and \r become \n
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror})") from err
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line:
            yield lineno, line


def check_records(
    records: Iterable[VideoRecord], root: Path, split: str, hint: str = ""
) -> list[VideoRecord]:
    """Refuse an empty result and duplicate video ids; return the records as a list.

    Ids must be unique because feature and score files are named by them. ``hint`` is appended
    to the message for an empty split.
    """
    records = list(records)
    if not records:
        raise DatasetError(f"{root}: no videos in split {split!r}" + (f" ({hint})" if hint else ""))
    seen: dict[str, str] = {}
    for rec in records:
        if rec.video_id in seen:
            raise DatasetError(
                f"{root}: video id {rec.video_id!r} appears twice (splits {seen[rec.video_id]!r}"
                f" and {rec.split!r}); ids must be unique because feature files are named by them"
            )
        seen[rec.video_id] = rec.split
    return records
