"""Nothing is left behind (issue 22 item 31): a command stopped by SIGTERM cleans up as after
Ctrl-C (real subprocesses and signals); extract on a full disk leaves no claim and still
reports its batch. (An export's orphans: tests/test_ownership_commands.py, defect 31.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stmil.atomic import TEMP_PATTERN
from tests.conftest import limit_file_size, ramp_frames, run_cli, write_video

STMIL = Path(sys.executable).with_name("stmil")


def _every_file(root: Path) -> list[Path]:
    """Every file below ``root``, hidden ones included."""
    return [Path(d, n) for d, _, names in os.walk(root) for n in names]


def _terminate_when(proc: subprocess.Popen, ready, timeout: float = 180) -> tuple[str, str]:
    """Send SIGTERM once ``ready()`` holds (while ``proc`` runs); return its output."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "never got there"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=120)


def test_synth_stopped_by_sigterm_leaves_no_temporary(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen([str(STMIL), "synth", "--out", str(out), "--videos", "4",
                             "--frames", "400", "--seed", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = _terminate_when(proc, lambda: any(TEMP_PATTERN.fullmatch(p.name)
                                               for p in _every_file(out)))
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err
    assert [p for p in _every_file(out) if p.name.endswith(".tmp")] == []


def test_extract_stopped_by_sigterm_leaves_no_claim_or_temporary(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(6):
        write_video(src / f"v{i}.mkv", ramp_frames(64, h=32, w=32, seed=i))
    out = tmp_path / "out"
    proc = subprocess.Popen([str(STMIL), "extract", str(src), "--out", str(out), "--size", "64",
                             "--grid", "4", "--batch-size", "1", "--device", "cpu", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = _terminate_when(proc, lambda: any(p.suffix == ".claim" for p in _every_file(out)))
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err
    assert [p.name for p in _every_file(out)
            if p.suffix in (".claim", ".tmp") or p.name.endswith(".tmp")] == []


def test_extract_on_a_full_disk_leaves_no_claim_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("videos").mkdir()
    write_video(Path("videos/v.mkv"), ramp_frames(20, h=32, w=32))
    with limit_file_size(40):  # not even the claim's marker line (~60 bytes) fits
        code, stdout, err = run_cli(capsys, "extract", "videos", "--out", "out", "--size", "64",
                                    "--grid", "4", "--quiet", "--device", "cpu")
    assert code == 1 and "Traceback" not in err
    assert stdout.startswith("0 done, 0 skipped, 1 failed")  # the batch is still reported
    assert err.splitlines() == [
        "error: videos/v.mkv: out/v.claim: File too large",
        "error: out/failures.json: File too large (so the failures above are not recorded)"]
    assert [p.name for p in _every_file(Path("out")) if not p.name.startswith("ledger")] == []


def test_an_interrupt_between_decode_worker_starts_leaves_no_claim(tmp_path, small_extractor,
                                                                   monkeypatch):
    """A SIGTERM can land while the decode workers start, the first already claiming videos
    (the race the subprocess test above hit now and then): the started workers are stopped
    and joined before the batch releases its claims, so none is left."""
    import threading

    import pytest

    from stmil.features.extract import ExtractSettings, extract_many
    from stmil.features.pipeline_config import PipelineConfig

    src, out = tmp_path / "videos", tmp_path / "out"
    src.mkdir()
    for i in range(4):
        write_video(src / f"v{i}.mkv", ramp_frames(32, h=32, w=32, seed=i))
    real_start, started = threading.Thread.start, []

    def start(self):
        real_start(self)
        if self.name.startswith("stmil-decode-"):
            started.append(self)
            if len(started) == 1:
                deadline = time.monotonic() + 30
                while not list(out.glob("*.claim")):  # the first worker has claimed
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
                raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(KeyboardInterrupt):
        extract_many([src], out, small_extractor, ExtractSettings(size=64), progress=False,
                     pipeline=PipelineConfig(workers=2))
    assert not any(t.is_alive() for t in started)
    assert list(out.glob("*.claim")) == []
