"""Shared fixtures: tiny lossless videos, paths to real data, an isolated weights cache."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """``../shared/data`` beside the checkout, else ``$STMIL_SHARED_DATA`` or /work/shared/data."""
    for candidate in (os.environ.get("STMIL_SHARED_DATA"), ROOT.parent / "shared" / "data",
                      "/work/shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return ROOT.parent / "shared" / "data"


SAMPLE = _shared_data() / "kinetics-i3d-sample"
CRICKET = SAMPLE / "v_CricketShot_g04_c01_rgb.gif"
UCF_META = _shared_data() / "ucf-crime-meta"
VTEST = Path(os.environ.get("STMIL_VTEST", ROOT / "data" / "vtest.avi"))


def require_file(path: Path, how: str) -> Path:
    """``path`` if it is a file; else skip the test, or fail it when ``$CI`` is set.

    CI provides the shared sample data and vtest.avi, so a missing file there is a broken set-up
    that must not pass as a silent skip. ``how`` says how to get the file.
    """
    if not Path(path).is_file():
        msg = f"{path} not found ({how})"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {msg}", pytrace=False)
        pytest.skip(msg)
    return Path(path)


def require_cricket() -> Path:
    """DeepMind's cricket GIF from the shared sample data (see :func:`require_file`)."""
    return require_file(CRICKET, "set STMIL_SHARED_DATA to the folder holding "
                                 "kinetics-i3d-sample/")


def require_ucf_meta(name: str) -> Path:
    """``name`` inside the shared ``ucf-crime-meta`` folder (see :func:`require_file`)."""
    return require_file(UCF_META / name, "set STMIL_SHARED_DATA to the folder holding "
                                         "ucf-crime-meta/")


def require_vtest() -> Path:
    """OpenCV's vtest.avi (see :func:`require_file`)."""
    return require_file(VTEST, "run make vtest, or set STMIL_VTEST")


def write_video(path: Path, frames: np.ndarray, fps: int = 30, codec: str = "ffv1") -> Path:
    """Write ``(N, H, W, 3)`` uint8 frames; ffv1 (in .mkv/.avi) is lossless."""
    pix = {"ffv1": "bgr0", "libx264": "yuv420p", "mpeg4": "yuv420p", "libvpx-vp9": "yuv420p",
           "gif": "rgb8"}[codec]
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def ramp_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Frames whose pixel values encode the frame index (for checking clip cutting)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    return np.stack([base + np.uint8(4 * (i % 50)) for i in range(n)])


@pytest.fixture(scope="session", autouse=True)
def _weights_cache(tmp_path_factory):
    """Tests share one converted-weights cache, never the user's."""
    if "STMIL_CACHE" not in os.environ:
        os.environ["STMIL_CACHE"] = str(tmp_path_factory.mktemp("stmil-cache"))
    yield


@pytest.fixture(scope="session")
def extractor():
    from stmil.features.extract import FeatureExtractor

    return FeatureExtractor(device="cpu")


@pytest.fixture(scope="session")
def live_run(tmp_path_factory, extractor) -> Path:
    """A tiny run trained on real I3D features of the planted scene of tests/live/scene.py
    (input size 64), trained once for tests/live and tests/serve: the run folder."""
    from tests.live.scene import write_planted_run

    return write_planted_run(tmp_path_factory.mktemp("live"), extractor)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``stmil`` in-process: (exit code, stdout, stderr)."""
    from stmil.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ``stmil`` log records ``caplog`` holds, as the CLI prints them (``error: ...``)."""
    from stmil.cli import LineFormatter

    return [LineFormatter().format(r) for r in caplog.records if r.name.startswith("stmil")]


@contextlib.contextmanager
def limit_file_size(limit: int) -> Iterator[None]:
    """Context: files larger than ``limit`` bytes fail to write with EFBIG (as a full disk does
    with ENOSPC), through the real kernel path."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


def assert_one_line_error(err: str, *needles: str) -> None:
    """stderr is exactly one ``error: ...`` line, no traceback, containing every needle."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]
