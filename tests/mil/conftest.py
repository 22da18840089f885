"""What the training and run-folder tests share: a tiny planted dataset, a finished run,
an interrupted one, and the helpers that look at them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import stmil.mil.train as T
from stmil.mil.train import train
from stmil.ownership import commit
from tests.conftest import file_tree
from tests.planted import make_planted

# Plumbing tests use a small scorer and few segments: they test the loop, not learning.
FAST = dict(iterations=6, hidden=16, mid=4, n_segments=4, checkpoint_every=2, device="cpu",
            progress=False)
CLI_FAST = ["--iterations", "6", "--hidden", "16", "--mid", "4", "--n-segments", "4",
            "--checkpoint-every", "2", "--device", "cpu", "--quiet"]


def last_line(err: str) -> str:
    """The error line of a train that logged progress lines first (none may be a traceback)."""
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes; the ledger as its entries)."""
    return file_tree(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """8 train + 4 test videos, 8 clips, 16 channels."""
    base = tmp_path_factory.mktemp("tiny")
    make_planted(base / "data", base / "feats", n_train=8, n_test=4, n_clips=8, channels=16)
    return base / "data", base / "feats"


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory) -> Path:
    """A finished run on ``tiny`` (do not modify: copy it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(*tiny, run, **FAST)
    return run


@pytest.fixture()
def run_copy(finished, tmp_path) -> Path:
    """A private copy of the finished run, with a metrics.json from an evaluation."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    commit(run, [(run / "metrics.json", lambda t: t.write_text('{"frame_auc": 0.5}'))],
           "evaluate")  # as stmil evaluate records it in the run's ledger
    return run


def interrupt_at(monkeypatch, iteration: int) -> None:
    """Make training die (as by Ctrl-C) right after the checkpoint of ``iteration``."""
    save = T._save_checkpoint

    def save_then_die(*args):  # (stage, model, optim, rng, state, ...)
        save(*args)
        if args[4]["iteration"] == iteration:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "_save_checkpoint", save_then_die)


@pytest.fixture()
def interrupted(tiny, tmp_path, monkeypatch) -> Path:
    """A run path whose training was interrupted after its checkpoint at iteration 4."""
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_at(m, 4)
        with pytest.raises(KeyboardInterrupt):
            train(*tiny, run, **FAST)
    return run


def stage_of(run: Path) -> Path:
    return run.parent / f".{run.name}.stmil-staging"

