"""The live run of tests/live (a tiny run trained on real I3D features of a planted scene)."""

from tests.live.conftest import live_run  # noqa: F401
