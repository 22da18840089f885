"""stmil.atomic: temporary files carry their writer's pid, stale ones (of dead writers) are
removed and nothing else is, and a write error names the destination, never the temporary
file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stmil.atomic import TEMP_PATTERN, atomic_write, remove_stale_temps, temp_path
from tests.conftest import dead_pid, limit_file_size

# ---- item 18: temporary files carry their writer's pid; stale ones are removed ----------

def test_temp_names_carry_the_writers_pid(tmp_path):
    tmp = temp_path(tmp_path / "v.npy")
    m = TEMP_PATTERN.fullmatch(tmp.name)
    assert m and (m["name"], int(m["pid"])) == ("v.npy", os.getpid())
    assert tmp.parent == tmp_path and tmp.name.startswith(".v.npy.") and tmp.suffix == ".tmp"


def test_remove_stale_temps_removes_only_dead_writers_temps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = Path("out")
    out.mkdir()
    dead, live = dead_pid(), os.getpid()
    stale = [f".v.npy.{dead}.abcd_123.tmp", f".v.json.{dead}.zzzzzzzz.tmp",
             f".a.b.c.mp4.{dead}.0a1b2c3d.tmp"]
    kept = [f".v.npy.{live}.abcd_123.tmp",  # a live writer (this process)
            f"v.npy.{dead}.abcd_123.tmp",  # not hidden: not ours
            f".v.npy.{dead}.abc.tmp",  # not tempfile's 8 random characters
            ".v.npy.abcd_123.tmp",  # no pid
            f".v.npy.{dead}.abcd_123.tmp.bak", "v.npy", "notes.txt"]
    for name in stale + kept:
        (out / name).write_text("x")
    (out / f".d.{dead}.abcdefgh.tmp").mkdir()  # a folder is never removed
    removed = remove_stale_temps(out)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in out.iterdir()) == sorted(kept + [f".d.{dead}.abcdefgh.tmp"])
    assert remove_stale_temps("missing") == []


def test_a_killed_writer_leaves_a_temp_that_remove_stale_temps_cleans(tmp_path):
    """A real kill mid-write: the temp file of the dead writer goes, the destination stays."""
    dest = tmp_path / "v.npy"
    dest.write_text("old")
    code = ("import sys, time; from stmil.atomic import atomic_write\n"
            "def w(t):\n    t.write_text('new'); print('writing', flush=True); time.sleep(60)\n"
            f"atomic_write({str(dest)!r}, w)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and int(TEMP_PATTERN.fullmatch(temps[0].name)["pid"]) == proc.pid
    assert remove_stale_temps(tmp_path) == []  # the writer is still alive
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert remove_stale_temps(tmp_path) == temps
    assert [p.name for p in tmp_path.iterdir()] == ["v.npy"] and dest.read_text() == "old"


# ---- item 21: a write error names the destination, never the temporary file --------------

def test_atomic_write_error_names_the_destination(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with limit_file_size(1000), pytest.raises(OSError) as info:
        atomic_write(Path("v.json"), lambda t: t.write_bytes(b"x" * 5000))
    assert (info.value.filename, info.value.strerror) == ("v.json", "File too large")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_into_a_missing_folder_names_the_destination(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(Path("nowhere/m.json"), lambda t: t.write_text("{}"))
    assert info.value.filename == "nowhere/m.json"  # not the hidden .m.json.<pid>.*.tmp
