"""Pseudo-label self-training (``self_train`` rounds after the MIL stage): the selection by hand,
the validation guard, reproducibility, and its settings' errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from stmil.errors import ConfigError
from stmil.mil import train as train_module
from stmil.mil.model import balanced_bce
from stmil.mil.selftrain import pseudo_positives
from stmil.mil.train import train
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted

FAST = dict(iterations=6, hidden=16, mid=4, n_segments=4, device="cpu", progress=False, seed=0,
            val_fraction=0.25, val_every=3)
ST = dict(self_train=2, self_train_iterations=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("selftrain")
    make_planted(base / "data", base / "feats", n_train=12, n_test=2, n_clips=3, channels=16)
    return base / "data", base / "feats"


def weights(run: Path) -> dict[str, np.ndarray]:
    return load_file(run / "model.safetensors")


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_pseudo_positives_by_hand():
    scores = np.array([[0.1, 0.9, 0.2, 0.3],   # segment 0, clip span (0, 1): max 0.9
                       [0.1, 0.9, 0.2, 0.3],   # segment 1 repeats clip 0: counted once
                       [0.5, 0.4, 0.8, 0.6],   # segment 2, span (1, 2): max 0.8
                       [0.7, 0.2, 0.1, 0.7]])  # segment 3, span (2, 3): max 0.7, a tie
    spans = np.array([[0, 1], [0, 1], [1, 2], [2, 3]])
    two_by_two = pseudo_positives(scores, spans, n_segments=2, n_cuboids=2)
    assert sorted(zip(*np.nonzero(two_by_two))) == [(0, 1), (0, 3), (2, 2), (2, 3)]
    three_by_one = pseudo_positives(scores, spans, n_segments=3, n_cuboids=1)
    assert sorted(zip(*np.nonzero(three_by_one))) == [(0, 1), (2, 2), (3, 0)]  # tie: lower index
    everything = pseudo_positives(scores, spans, n_segments=9, n_cuboids=9)
    assert everything.sum() == 12 and not everything[1].any()


def test_balanced_bce_by_hand():
    pos, neg = torch.tensor([0.5, 1.0]), torch.tensor([0.0, 0.0, 0.0, 0.75])
    # positives: (ln 2 + 0) / 2; negatives: (0 + 0 + 0 + ln 4) / 4; each class weighs half
    expected = (np.log(2) / 2 + np.log(4) / 4) / 2
    assert balanced_bce(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_self_train_zero_changes_nothing(tiny, tmp_path):
    train(*tiny, tmp_path / "default", **FAST)
    train(*tiny, tmp_path / "zero", **FAST, self_train=0, self_train_segments=5,
          self_train_cuboids=7, self_train_iterations=9, self_train_init="fresh")
    assert same(weights(tmp_path / "default"), weights(tmp_path / "zero"))
    header = (tmp_path / "zero" / "history.csv").read_text().splitlines()[0]
    assert header == "iteration,loss,hinge,smoothness,sparsity,val_auc,negatives"  # topk


@pytest.fixture(scope="module")
def learnable(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("learnable")
    make_planted(base / "data", base / "feats", n_train=12, n_test=2, n_clips=3, channels=16,
                 seed=1)
    return base / "data", base / "feats"


LEARN = FAST | dict(iterations=15, hidden=32, mid=8)


@pytest.mark.parametrize("init, kept", [("continue", [0]), ("fresh", [1, 0])])
def test_rounds_are_recorded_and_reproducible(learnable, tmp_path, init, kept):
    # measured on this fixture: MIL reaches validation AUC 1.0; continuing, round 1 drops it
    # (undone, so no round 2); a fresh scorer keeps 1.0 in round 1, round 2 drops it (undone)
    s1 = train(*learnable, tmp_path / "a", **LEARN, **ST, self_train_init=init)
    s2 = train(*learnable, tmp_path / "b", **LEARN, **ST, self_train_init=init)
    assert same(weights(tmp_path / "a"), weights(tmp_path / "b"))  # same seed, same weights
    rows = history(tmp_path / "a")
    assert list(rows[0])[-2:] == ["round", "kept"]
    rounds = [r["round"] for r in rows]
    assert rounds == [""] * 15 + [str(r + 1) for r in range(len(kept)) for _ in range(4)]
    assert [int(r["iteration"]) for r in rows] == list(range(1, len(rows) + 1))
    ends = [r for r in rows if r["kept"] != ""]
    assert [int(r["kept"]) for r in ends] == kept
    assert [r["iteration"] for r in ends] == [str(15 + 4 * (i + 1)) for i in range(len(kept))]
    assert s1.self_train_kept == s2.self_train_kept == sum(kept)
    assert s1.final_loss == float(rows[14]["loss"])  # the MIL stage's last loss
    cfg = (tmp_path / "a" / "config.yaml").read_text()
    assert "self_train: 2\n" in cfg and f"self_train_init: {init}\n" in cfg
    train(*learnable, tmp_path / "mil", **LEARN)
    assert same(weights(tmp_path / "a"), weights(tmp_path / "mil")) == (sum(kept) == 0)


def test_a_round_that_lowers_validation_is_undone(tiny, tmp_path, monkeypatch):
    real = train_module._video_auc
    first: list = []

    def lowered(model, *args):  # the MIL stage's model scores as it is, every other lower
        first.extend([] if first else [model])
        return real(model, *args) - (0 if model is first[0] else 0.5)

    train(*tiny, tmp_path / "mil", **FAST)
    first.clear()
    monkeypatch.setattr(train_module, "_video_auc", lowered)
    summary = train(*tiny, tmp_path / "st", **FAST, **ST)
    assert summary.self_train_kept == 0
    assert same(weights(tmp_path / "st"), weights(tmp_path / "mil"))
    rows = history(tmp_path / "st")
    assert [r["round"] for r in rows] == [""] * 6 + ["1"] * 4  # no second round after a drop
    assert rows[-1]["kept"] == "0"


def test_settings_errors_are_one_line(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data, feats = tiny
    base = ("train", "--data", data, "--features", feats, "--out", "run", "--iterations", "2")
    for extra, needle in [
        (("--self-train", "-1"), "--self-train must be a whole number from 0 to 100, got -1"),
        (("--self-train", "1"), "--self-train needs a validation split to keep or undo its "
                                "rounds: set --val-fraction > 0"),
        (("--self-train", "1", "--val-fraction", "0.25", "--supervision", "boxes"),
         "--self-train applies to weak supervision; set --self-train 0 for --supervision "
         "boxes"),
        (("--self-train-cuboids", "0"),
         "--self-train-cuboids must be a whole number from 1 to 1000000, got 0"),
        (("--self-train-segments", "0"),
         "--self-train-segments must be a whole number from 1 to 10000, got 0"),
        (("--self-train-iterations", "0"),
         "--self-train-iterations must be a whole number from 1 to 1000000000, got 0"),
    ]:
        code, _, err = run_cli(capsys, *base, *extra)
        assert code == 1, extra
        assert_one_line_error(err, needle)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="self_train_init must be one of continue, fresh, "
                                          "got 'restart'"):
        train(data, feats, "run", self_train_init="restart")
    Path("bad.yaml").write_text("self_train: -2\n")
    code, _, err = run_cli(capsys, *base, "--config", "bad.yaml")
    assert code == 1
    assert_one_line_error(err, "bad.yaml: self_train must be a whole number from 0 to 100, got -2")


def test_too_few_videos_for_a_validation_split(tmp_path):
    make_planted(tmp_path / "data", tmp_path / "feats", n_train=4, n_test=2, n_clips=3,
                 channels=8)
    with pytest.raises(ConfigError, match="self_train needs a validation split, and its 4 "
                                          "training videos leave none at val_fraction 0.25"):
        train(tmp_path / "data", tmp_path / "feats", tmp_path / "run", **FAST, self_train=1)
    assert not (tmp_path / "run").exists()
