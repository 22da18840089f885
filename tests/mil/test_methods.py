"""Training methods: ``paper`` reproduces the earlier method exactly; ``topk`` and the total
variation term, checked against hand-computed values, and learning a planted signal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file

from stmil.errors import ConfigError
from stmil.evaluation.evaluate import evaluate
from stmil.mil.model import mil_ranking_loss, topk_mil_loss, total_variation, weak_loss
from stmil.mil.train import train
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted

FAST = dict(iterations=6, hidden=16, mid=4, n_segments=4, device="cpu", progress=False, seed=0)
# model.safetensors of train(**FAST) on make_planted(n_train=8, n_test=4, n_clips=8,
# channels=16), as written by stmil before methods existed (commit 8957299): per tensor, the
# sum and the first three values.
PAPER_GOLDEN = {
    "net.0.bias": (-0.026203, [0.0, 0.011679, 0.013897]),
    "net.0.weight": (2.021283, [-0.173034, -0.313214, -0.066172]),
    "net.3.bias": (-0.049217, [0.013714, -0.014885, -0.019683]),
    "net.3.weight": (-0.306566, [-0.22746, -0.170961, 0.661465]),
    "net.5.bias": (0.000513, [0.000513]),
    "net.5.weight": (0.517385, [0.030171, -0.28346, 0.118636]),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("methods")
    make_planted(base / "data", base / "feats", n_train=8, n_test=4, n_clips=8, channels=16)
    return base / "data", base / "feats"


def test_paper_reproduces_the_weights_of_before(tiny, tmp_path):
    # gate auto (the default) is none for the paper's method: ungated, as before
    for name, extra in (("paper-auto", {"method": "paper"}),
                        ("paper", {"method": "paper", "gate": "none"})):
        train(*tiny, tmp_path / name, **FAST, **extra)
        weights = load_file(tmp_path / name / "model.safetensors")
        assert sorted(weights) == sorted(PAPER_GOLDEN)
        for key, (total, first) in PAPER_GOLDEN.items():
            w = weights[key].astype(np.float64).ravel()
            assert w.sum() == pytest.approx(total, abs=2e-5), key
            np.testing.assert_allclose(w[:3], first, atol=2e-6, err_msg=key)
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("paper-auto", "paper"))
    assert all(np.array_equal(a[k], b[k]) for k in PAPER_GOLDEN)  # bit for bit
    header = (tmp_path / "paper" / "history.csv").read_text().splitlines()[0]
    assert header == "iteration,loss,hinge,smoothness,sparsity,val_auc"


def test_the_default_is_topk_with_the_memory_gate(tiny, tmp_path):
    """train's defaults: method topk, gate memory (recorded resolved in config.yaml); the
    scorer is the one an ungated topk training writes, bit for bit (the gate comes after)."""
    train(*tiny, tmp_path / "default", **FAST)
    train(*tiny, tmp_path / "topk", **FAST, method="topk", gate="none")
    cfg = yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())
    assert (cfg["method"], cfg["gate"]) == ("topk", "memory")
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("default", "topk"))
    assert sorted(a) == sorted([*b, "gate.bank", "gate.scale"])
    assert all(np.array_equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("settings, grid, normal, resolved", [
    ({}, 7, 2, ("topk", "memory")), ({}, 1, 2, ("paper", "none")), ({}, 7, 1, ("topk", "none")),
    ({"instances": "frame"}, 1, 2, ("paper", "none")),
    ({"method": "topk"}, 1, 2, ("topk", "none")),
    ({"method": "paper"}, 7, 2, ("paper", "none")),
    ({"supervision": "boxes"}, 7, 2, ("paper", "none")),
    ({"method": "paper", "gate": "memory"}, 7, 2, ("paper", "memory")),
    ({"gate": "none"}, 7, 2, ("topk", "none")), ({"gate": "memory"}, 1, 2, ("paper", "memory"))])
def test_auto_method_and_gate_follow_the_grid_and_normal_videos(settings, grid, normal,
                                                                resolved):
    from stmil.mil.config import TrainConfig

    cfg = TrainConfig(**settings).resolve_auto(grid, normal)
    assert (cfg.method, cfg.gate) == resolved


def test_a_run_older_than_method_and_gate_was_the_papers():
    """A run whose config.yaml lacks ``method`` and ``gate`` was trained with the paper's
    loss, ungated: resuming it asks for exactly that, not today's defaults."""
    from stmil.mil.config import TrainConfig
    from stmil.mil.run import resume_mismatch

    older = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("method", "gate")}
    assert resume_mismatch(older, TrainConfig().resolve_auto(7, 2).to_dict()) == \
        "method 'paper' recorded vs 'topk' given"
    assert resume_mismatch(older, TrainConfig(method="paper").resolve_auto(7, 2).to_dict()) is None


def test_topk_loss_by_hand():
    # one anomalous bag (S=1, N=4) and two normal bags; k = 2
    pos = torch.tensor([[[0.9, 0.1, 0.7, 0.3]]])
    neg = torch.tensor([[[0.2, 0.5, 0.0, 0.1]], [[0.4, 0.4, 0.4, 0.4]]])
    total, parts = topk_mil_loss(pos, neg, k=2, neg_weight=0.5, lambda1=0.0, lambda2=0.1)
    # top-2 mean of pos = 0.8; hinges: 1 - 0.8 + 0.5 = 0.7 and 1 - 0.8 + 0.4 = 0.6
    assert parts["hinge"].item() == pytest.approx(1.3, abs=1e-6)
    bce1 = -(math.log(0.8) + math.log(0.5) + math.log(1.0) + math.log(0.9)) / 4
    bce2 = -math.log(0.6)
    assert parts["negatives"].item() == pytest.approx(1 * (bce1 + bce2), rel=1e-5)
    assert parts["sparsity"].item() == pytest.approx(2.0, abs=1e-6)
    assert total.item() == pytest.approx(1.3 + 0.5 * (bce1 + bce2) + 0.1 * 2.0, rel=1e-5)
    # k = 1 gives the paper's hinge
    _, one = topk_mil_loss(pos, neg, k=1)
    _, paper = mil_ranking_loss(pos, neg)
    assert one["hinge"].item() == pytest.approx(paper["hinge"].item(), abs=1e-7)
    # k larger than the bag averages every instance: mean 0.5 -> hinges 1.0 and 0.9
    _, big = topk_mil_loss(pos, neg, k=99)
    assert big["hinge"].item() == pytest.approx(1.9, abs=1e-6)


def test_total_variation_by_hand():
    # one bag, two segments of a 2x2 map
    pos = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.5]]])
    # segment 0: rows |0-1| + |0-0| = 1 (vertical neighbours: (0,0)-(1,0) = 1, (0,1)-(1,1) = 0)
    #            columns |0-1| + |0-0| = 1
    # segment 1: vertical |0-1| + |0.5-1| = 1.5; horizontal |1-1| + |0.5-0| = 0.5
    # time: |1-1| + |1-0| + |0-0| + |0.5-0| = 1.5
    assert total_variation(pos).item() == pytest.approx(1 + 1 + 1.5 + 0.5 + 1.5)
    frame = torch.tensor([[[0.2], [0.7], [0.1]]])  # N = 1: temporal part only
    assert total_variation(frame).item() == pytest.approx(0.5 + 0.6)
    with pytest.raises(ValueError, match="N = G \\* G"):
        total_variation(torch.zeros(1, 2, 3))


def test_weak_loss_adds_tv_and_paper_is_unchanged():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(3, 4, 9, generator=g), torch.rand(2, 4, 9, generator=g)
    paper, parts = weak_loss(pos, neg)
    ref, _ = mil_ranking_loss(pos, neg)
    assert paper.item() == ref.item() and "tv" not in parts
    with_tv, parts = weak_loss(pos, neg, lambda_tv=0.5)
    assert with_tv.item() == pytest.approx(ref.item() + 0.5 * total_variation(pos).item(),
                                           rel=1e-6)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        weak_loss(pos, neg, method="nope")


def test_topk_with_tv_learns_and_localizes_a_planted_signal(tmp_path):
    data, feats = tmp_path / "data", tmp_path / "feats"
    make_planted(data, feats, n_train=12, n_test=10, n_clips=16, channels=32, seed=0)
    train(data, feats, tmp_path / "run", iterations=20, seed=0, device="cpu", progress=False,
          method="topk", topk=3, lambda_tv=1e-3, hidden=64, mid=8, n_segments=8)
    m = evaluate(data, feats, tmp_path / "run").result
    assert m["cuboid_auc"] >= 0.9
    assert m["pointing_accuracy"] >= 0.8
    assert m["frame_auc"] >= 0.9
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert history[0].endswith(",negatives,tv")


def test_cli_method_flags(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data, feats = tiny
    code, out, err = run_cli(capsys, "train", "--data", data, "--features", feats, "--out", "run",
                             "--method", "topk", "--topk", "2", "--neg-weight", "0.5",
                             "--lambda-tv", "0.001", "--iterations", "2", "--hidden", "8",
                             "--mid", "2", "--n-segments", "4", "--device", "cpu", "--quiet")
    assert code == 0, err
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (cfg["method"], cfg["topk"], cfg["neg_weight"], cfg["lambda_tv"]) == ("topk", 2, 0.5,
                                                                                 0.001)
    code, _, err = run_cli(capsys, "train", "--data", data, "--features", feats, "--out", "r2",
                           "--topk", "0")
    assert code == 1
    assert_one_line_error(err, "--topk must be a whole number from 1 to 1000000, got 0")
    with pytest.raises(ConfigError, match="method must be one of auto, paper, topk, got 'rtfm'"):
        train(data, feats, tmp_path / "r3", method="rtfm")
