"""The ledger's journal (stmil.ownership): committing N files one by one appends one line each
instead of rewriting the ledger (benchmarks/ledger_commit.py), with the same guarantee: a kill
at any instant leaves every file stmil wrote its own, and never claims a user's."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stmil.ownership as O
from stmil.atomic import TEMP_PATTERN
from stmil.errors import OutputError
from tests.test_ownership import USER, put, snapshot

CHILD = """
import sys
from pathlib import Path
import stmil.ownership as O
O.JOURNAL_MIN = 7  # whole ledgers often, so kills land in those too
folder, start = Path(sys.argv[1]), int(sys.argv[2])
for i in range(start, start + 100000):
    O.commit(folder, [(folder / f"f{i % 23}.json", lambda t, i=i: t.write_text(str(i))),
                      (folder / f"g{i % 5}.npy", lambda t, i=i: t.write_bytes(b"x" * (i % 7)))],
             "test")
"""


def test_a_kill_at_any_instant_leaves_every_file_ours(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "mine.txt").write_bytes(USER)  # a user's file, there from the start
    rng = random.Random(0)
    for k in range(8):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(k * 1000)])
        time.sleep(rng.uniform(0.3, 1.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        ledger = O.Ledger.load(folder)  # always readable
        for name in sorted(snapshot(folder)):
            if not TEMP_PATTERN.fullmatch(name):  # a killed writer's: removed by its next run
                assert ledger.owns(name) == (name != "mine.txt"), (k, name)
    assert len(snapshot(folder)) > 20  # the children got well into their commits
    O.commit(folder, [(folder / n, put(b"last")) for n in snapshot(folder)
                      if n != "mine.txt" and not TEMP_PATTERN.fullmatch(n)],
             "test")  # every file stmil wrote is replaceable: none is stuck as the user's
    with pytest.raises(OutputError, match="mine.txt: exists and is not a file stmil wrote"):
        O.commit(folder, [(folder / "mine.txt", put(b"x"))], "test")
    assert (folder / "mine.txt").read_bytes() == USER


def test_a_torn_journal_line_is_skipped_and_ended(tmp_path):
    O.commit(tmp_path, [(tmp_path / "a.json", put(b"1"))], "x")  # the ledger, whole
    O.commit(tmp_path, [(tmp_path / "b.json", put(b"2"))], "x")  # a journal line
    journal = O.journal_path(tmp_path)
    with open(journal, "ab") as f:
        f.write(b'{"g": "')  # a kill mid-append
    O._LIVE.clear()  # as another process would read it
    assert O.Ledger.load(tmp_path).owns("b.json")
    O.commit(tmp_path, [(tmp_path / "c.json", put(b"3"))], "x")
    O._LIVE.clear()
    ledger = O.Ledger.load(tmp_path)
    assert ledger.owns("a.json") and ledger.owns("b.json") and ledger.owns("c.json")
    assert journal.read_bytes().count(b"\n") == 3  # the torn line ended, then c's


def test_the_journal_is_folded_into_the_ledger_when_long(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(O, "JOURNAL_MIN", 3)
    for i in range(4):  # one whole write, then 3 lines
        O.commit(tmp_path, [(tmp_path / "a.json", put(str(i).encode()))], "x")
    assert O.journal_path(tmp_path).read_bytes().count(b"\n") == 3
    O.commit(tmp_path, [(tmp_path / "a.json", put(b"4"))], "x")  # 3 lines: written whole
    assert not O.journal_path(tmp_path).exists()
    entry = json.loads(O.ledger_path(tmp_path).read_text())["files"]["a.json"]
    assert entry["sha256"] == hashlib.sha256(b"4").hexdigest()
    assert entry["previous"]["sha256"] == hashlib.sha256(b"3").hexdigest()


def test_stale_lines_of_an_older_generation_are_ignored(tmp_path):
    O.commit(tmp_path, [(tmp_path / "a.json", put(b"1"))], "x")
    O.commit(tmp_path, [(tmp_path / "b.json", put(b"2"))], "x")
    stale = O.journal_path(tmp_path).read_bytes()
    O.remove(tmp_path, "b.json")  # the ledger whole, a new generation; the journal deleted
    (tmp_path / "b.json").write_bytes(b"2")  # a user's file with stmil's old bytes
    O.journal_path(tmp_path).write_bytes(stale)  # as a kill before deleting it would leave
    O._LIVE.clear()
    assert not O.Ledger.load(tmp_path).owns("b.json")


def test_a_failed_commit_leaves_no_journal_line(tmp_path):
    O.commit(tmp_path, [(tmp_path / "a.json", put(b"1"))], "x")

    def fail(tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        O.commit(tmp_path, [(tmp_path / "b.json", put(b"2")), (tmp_path / "c.json", fail)],
                 "x")
    assert not O.journal_path(tmp_path).exists() and snapshot(tmp_path) == {"a.json": b"1"}


def test_commits_name_the_folder_any_way_from_any_working_directory(tmp_path, monkeypatch):
    """The ledger this process keeps between commits is found by absolute path: a folder named
    absolutely, then relatively, then from another working directory is the same folder (a
    run evaluated by path after a training by name failed with "not in" before)."""
    (tmp_path / "a" / "run").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    absolute = tmp_path / "a" / "run"
    for n, (folder, dest) in enumerate([(absolute, absolute / "m.json"),
                                        (Path("run"), Path("run/m.json")),
                                        (Path("run"), absolute / "n.json")]):
        O.commit(folder, [(dest, lambda t, n=n: t.write_text(str(n)))], "test")
    monkeypatch.chdir(tmp_path / "b")
    O.commit(Path("../a/run"), [(Path("../a/run/m.json"), lambda t: t.write_text("3"))], "test")
    O.commit(absolute, [(Path("../a/run/n.json"), lambda t: t.write_text("4"))], "test")
    ledger = O.Ledger.load(absolute)
    assert sorted(ledger.files) == ["m.json", "n.json"]
    assert (absolute / "m.json").read_text() == "3" and (absolute / "n.json").read_text() == "4"
    assert ledger.owns("m.json") and ledger.owns("n.json")
