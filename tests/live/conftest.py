"""A tiny run trained on real I3D features of the planted scene (see tests/live/scene.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live.scene import write_planted_run


@pytest.fixture(scope="session")
def live_run(tmp_path_factory, extractor) -> Path:
    """The run folder (trained in the session's temporary folder, input size 112)."""
    return write_planted_run(tmp_path_factory.mktemp("live"), extractor)
