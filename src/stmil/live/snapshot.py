"""One JPEG per incident: its peak frame with the incident's box drawn (Pillow).

Each snapshot carries the JPEG comment :data:`COMMENT`, so stmil replaces only snapshots it
wrote and refuses any other file in the way.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stmil.atomic import write_bytes
from stmil.errors import OutputError

COMMENT = b"stmil incident snapshot"


def is_snapshot(path: Path) -> bool:
    """Whether ``path`` is a JPEG that :func:`write_snapshot` wrote."""
    try:
        with Image.open(path) as im:
            return im.format == "JPEG" and im.info.get("comment") == COMMENT
    except (OSError, ValueError):
        return False


def snapshot_name(video_id: str, incident_id: int) -> str:
    return f"{video_id}.incident-{incident_id:03d}.jpg"


def write_snapshot(dest: Path, frame: np.ndarray, box: list[float], label: str) -> Path:
    """Atomically write ``frame`` ``(H, W, 3)`` uint8 RGB with ``box`` (x1, y1, x2, y2, source
    pixels) in red and ``label`` above it; a file at ``dest`` that is not a stmil snapshot is
    refused (:class:`OutputError`)."""
    if dest.exists() and not is_snapshot(dest):
        raise OutputError(f"{dest}: exists and is not a stmil snapshot; refusing to overwrite "
                          "it (move it away, or use another --snapshots folder)")
    im = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    x1, y1, x2, y2 = box
    width = max(2, round(min(im.size) / 120))
    draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=(255, 0, 0), width=width)
    draw.text((x1 + 2, max(0, y1 - 12)), label, fill=(255, 0, 0))
    buf = BytesIO()
    im.save(buf, format="JPEG", quality=90, comment=COMMENT)
    data = buf.getvalue()
    return write_bytes(dest, data)
