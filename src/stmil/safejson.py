"""One JSON loader for stmil's readers of files a user may have damaged.

``json.loads`` raises :class:`RecursionError` on deeply nested input (``[[[[...]]]]``), which
no ``except ValueError`` catches. :func:`loads` turns it into a :class:`ValueError` ("not
valid JSON"), so a reader's one ``except (UnicodeDecodeError, ValueError)`` covers every
damaged file.
"""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes | bytearray) -> Any:
    """``json.loads(text)``; :class:`ValueError` (never :class:`RecursionError`) for JSON
    nested too deeply to read."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
