"""An MP4 reader for tests, independent of PyAV's writer: the boxes (atoms) of the file read
byte by byte (ISO/IEC 14496-12: a 32-bit big-endian size, a 4-letter type; size 1: a 64-bit
size follows; size 0: to the end of the file)."""

from __future__ import annotations

import struct
from pathlib import Path

import av

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """``(type, payload start, box end)`` of the boxes in ``data[start:end]``, in order."""
    end = len(data) if end is None else end
    out, at = [], start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        head = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[at + 8:at + 16])
            head = 16
        elif size == 0:
            size = end - at
        if size < head or at + size > end:
            raise ValueError(f"broken box {kind!r} at byte {at}")
        out.append((kind.decode("latin-1"), at + head, at + size))
        at += size
    return out


def top_level(path: Path) -> list[str]:
    """The types of the file's top-level boxes, in file order (``moov`` before ``mdat``:
    fast start)."""
    return [kind for kind, _, _ in boxes(Path(path).read_bytes())]


def sample_entries(path: Path) -> list[str]:
    """The sample entry type of each track (``avc1``: H.264), from moov/trak/.../stsd."""
    data = Path(path).read_bytes()
    found: list[str] = []

    def walk(start: int, end: int) -> None:
        for kind, a, b in boxes(data, start, end):
            if kind.encode() in CONTAINERS:
                walk(a, b)
            elif kind == "stsd":  # version+flags (4), entry count (4), then sample entries
                found.extend(k for k, _, _ in boxes(data, a + 8, b))

    walk(0, len(data))
    return found


def assert_browser_mp4(path: Path) -> None:
    """``path`` is H.264 (avc1) yuv420p with its index before its data (fast start)."""
    order = top_level(path)
    assert "moov" in order and "mdat" in order, order
    assert order.index("moov") < order.index("mdat"), f"{path}: not fast start: {order}"
    assert sample_entries(path) == ["avc1"], sample_entries(path)
    with av.open(str(path)) as c:  # PyAV's reader, for the pixel format of the stream
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
