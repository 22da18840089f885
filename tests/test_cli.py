"""The CLI layer itself: where log lines go, ``--config`` for every command."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stmil.mil.train import train
from tests.conftest import run_cli
from tests.planted import make_planted

TRAIN = ["--iterations", "2", "--hidden", "8", "--mid", "4", "--n-segments", "2",
         "--device", "cpu", "--quiet"]
NO_BOX = "FightingTest000_x264"  # its box file is removed: the loader warns, taken as normal


@pytest.fixture()
def planted(tmp_path, monkeypatch) -> tuple[str, str]:
    """A tiny planted dataset ``data/`` and features ``feats/`` in the working folder, one
    anomalous test video without its box file."""
    monkeypatch.chdir(tmp_path)
    make_planted(Path("data"), Path("feats"), n_train=4, n_test=2, n_clips=4, channels=8)
    (Path("data/readme/Txt annotations") / f"{NO_BOX}.txt").unlink()
    return "data", "feats"


def lines_with(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def test_log_lines_go_once_to_stderr_and_summaries_once_to_stdout(planted, capsys):
    data, feats = planted
    split, boxes = Path("data/readme/Test_split_AD.txt"), Path("data/readme/Txt annotations")
    warning = f"warning: {split}:1: {NO_BOX} has no box file in {boxes}; taken as normal\n"
    for i in range(2):  # configured once per call: a second call adds no second handler
        code, out, err = run_cli(capsys, "gt", "--data", data, "--features", feats, "--out",
                                 f"gt{i}")
        assert code == 0, err
        assert out == f"{Path(f'gt{i}/gt.npy')}\n"
        assert err == warning  # once, on stderr, with its prefix

        code, out, err = run_cli(capsys, "train", "--data", data, "--features", feats,
                                 "--out", f"run{i}", *TRAIN)
        assert code == 0, err
        assert len(lines_with(out, "trained 2 iterations in ")) == 1 and out.count("\n") == 1
        assert lines_with(err, "train: ") == ["train: 2 anomalous + 2 normal bags, 0 validation"]
    assert logging.getLogger("stmil").handlers == []  # main leaves logging as it found it
    assert logging.getLogger("stmil").level == logging.NOTSET


def test_log_lines_are_written_through_tqdm(planted, capsys, monkeypatch):
    """Through ``tqdm.write``, so that a progress bar on the same terminal is not broken."""
    from tqdm import tqdm

    written: list[str] = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, s, file=None, **kw:
                                                   written.append(s)))
    code, _, err = run_cli(capsys, "train", "--data", planted[0], "--features", planted[1],
                           "--out", "run", *TRAIN)
    assert code == 0 and err == ""
    assert written == ["train: 2 anomalous + 2 normal bags, 0 validation"]


def test_the_library_without_logging_configured_prints_no_info_line(planted, capsys):
    data, feats = planted
    run_cli(capsys, "train", "--data", data, "--features", feats, "--out", "cli-run", *TRAIN)
    summary = train(data, feats, "lib-run", iterations=2, hidden=8, mid=4, n_segments=2,
                    device="cpu", progress=False)
    out, err = capsys.readouterr()
    assert summary["iterations"] == 2
    assert (out, err) == ("", "")  # no "train: ..." line
