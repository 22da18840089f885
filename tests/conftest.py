"""Shared fixtures: tiny lossless videos, paths to real data, an isolated weights cache."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import resource
import signal
import subprocess
import sys
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


#: ``stmil`` as a child process that a SIGINT interrupts as a terminal's Ctrl-C does, even when
#: this run inherited SIGINT ignored (a shell's background job, ``nohup``: Python then keeps
#: it ignored in every child); append the command and its arguments.
STMIL_CTRL_C = [sys.executable, "-c",
                "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "from stmil.cli import main; sys.exit(main())"]


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
def small_extractor(extractor):
    """The session's extractor with a 4 x 4 grid (the same loaded network): the whole 4x4
    Mixed_4e map of frames resized to 64 pixels, where grid 7 does not fit (issue 22 item
    18). Features ``(n_clips, 16, 528)``."""
    small = copy.copy(extractor)
    small.grid = 4
    return small


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


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """``folder`` (made) cannot be written in: mode 0500, or for root (who ignores modes) the
    ext4 immutable flag; skips where neither works."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    try:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    except FileNotFoundError:
        done = False
    if not done:
        pytest.skip("running as root and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def assert_one_line_error(err: str, *needles: str) -> None:
    """stderr is exactly one ``error: ...`` line, no traceback, containing every needle."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped): a writer that was killed."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def file_tree(root: Path, ledger: bool = True) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) -> its bytes; the ledger's own files
    (``.stmil/ledger.json`` and its journal, whose split depends on the order of commits) as
    the entries they hold together, or left out with ``ledger=False``."""
    from stmil.ownership import LEDGER_DIR, Ledger

    tree = {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()
            and (ledger or LEDGER_DIR not in p.relative_to(root).parts)}
    if ".stmil/ledger.json" in tree:
        tree.pop(".stmil/journal.jsonl", None)
        tree[".stmil/ledger.json"] = json.dumps(Ledger.load(root).files, sort_keys=True).encode()
    return tree
