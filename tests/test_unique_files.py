"""One rule for a file named twice (issue 22 item 28): ``extract`` and ``score`` both process
it once, whether named by two relative paths or by a symlink and its target."""

from __future__ import annotations

import os
from pathlib import Path

from stmil.features.extract import expand_inputs
from stmil.score import collect_inputs


def layout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "bad" / "f16.mp4").write_bytes(b"not decoded here")
    (tmp_path / "bad" / "g.mp4").write_bytes(b"another")
    os.symlink(tmp_path / "bad" / "f16.mp4", tmp_path / "work" / "f16.mp4")
    monkeypatch.chdir(tmp_path / "work")


def test_extract_takes_a_file_named_twice_once(tmp_path, monkeypatch):
    layout(tmp_path, monkeypatch)
    videos, failures = expand_inputs(["../bad/f16.mp4", "./../bad/f16.mp4", "f16.mp4",
                                      "../bad"])
    assert failures == []
    assert videos == [Path("../bad/f16.mp4"), Path("../bad/g.mp4")]


def test_score_and_extract_follow_the_same_rule(tmp_path, monkeypatch):
    layout(tmp_path, monkeypatch)
    named = ["f16.mp4", "../bad/f16.mp4", "./../bad/f16.mp4", "../bad/g.mp4"]
    assert collect_inputs(named) == expand_inputs(named)[0] == [Path("f16.mp4"),
                                                                Path("../bad/g.mp4")]


def test_unique_files_keeps_order_and_a_symlink_loop(tmp_path):
    """Each link of a loop resolves to itself: both are kept, for the reader to refuse."""
    from stmil.files import unique_files

    os.symlink(tmp_path / "b.mp4", tmp_path / "a.mp4")
    os.symlink(tmp_path / "a.mp4", tmp_path / "b.mp4")
    (tmp_path / "c.mp4").write_bytes(b"x")
    got = unique_files([tmp_path / "c.mp4", tmp_path / "a.mp4", tmp_path / "c.mp4",
                        tmp_path / "b.mp4"])
    assert got == [tmp_path / "c.mp4", tmp_path / "a.mp4", tmp_path / "b.mp4"]
