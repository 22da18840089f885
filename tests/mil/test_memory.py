"""The normal-memory gate (``gate: memory``): hand-computed novelty and scale, training with it
leaves the scorer's weights untouched, and the gated scores of a run are the scorer's times
the gate, computed here independently with numpy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file, save_file

from stmil.errors import ModelError
from stmil.mil.detector import Detector, RunConfig
from stmil.mil.memory import MemoryGate, build_memory
from stmil.mil.run import load_model, resume_mismatch
from stmil.mil.train import _carve_validation, train
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted

FAST = dict(iterations=6, hidden=16, mid=4, n_segments=4, device="cpu", progress=False, seed=0,
            val_fraction=0.25, val_every=3)
E = np.eye(3, dtype=np.float32)


def test_novelty_and_gate_by_hand():
    gate = MemoryGate(torch.from_numpy(E[:2]), torch.tensor([0.1, 0.5]))
    q = torch.from_numpy(np.stack([E[0], (E[0] + E[2]) / math.sqrt(2), E[2]]))
    nov = 1 - 1 / math.sqrt(2)  # nearest entry e1 at cosine 1/sqrt(2)
    np.testing.assert_allclose(gate.novelty(q).numpy(), [0.0, nov, 1.0], atol=1e-6)
    # (novelty - 0.1) / 0.4, clipped to [0, 1]
    np.testing.assert_allclose(gate(q).numpy(), [0.0, (nov - 0.1) / 0.4, 1.0], atol=1e-6)
    assert gate(q.reshape(1, 3, 3)).shape == (1, 3)  # any leading shape


def test_scale_leaves_each_video_out():
    a = 0.3
    videos = [E[:1], np.array([[math.cos(a), math.sin(a), 0]], np.float32), E[2:]]
    gate = build_memory(videos, size=100, seed=0)
    # leave one out: e1 and its rotation see each other (1 - cos a); e3 sees nothing near (1)
    np.testing.assert_allclose(gate.scale.numpy(), [1 - math.cos(a), 1.0], atol=1e-6)
    assert len(gate.bank) == 3


def test_bank_is_a_seeded_sample_of_size():
    rng = np.random.default_rng(1)
    videos = [rng.normal(size=(50, 8)).astype(np.float32) for _ in range(4)]
    videos = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in videos]
    a, b = build_memory(videos, size=30, seed=5), build_memory(videos, size=30, seed=5)
    assert a.bank.shape == (30, 8)
    assert torch.equal(a.bank, b.bank) and torch.equal(a.scale, b.scale)
    every = np.concatenate(videos)
    assert all(np.abs(every - r).max(axis=1).min() < 1e-6 for r in a.bank.numpy())
    assert not torch.equal(a.bank, build_memory(videos, size=30, seed=6).bank)


def test_rows_are_normalised_and_read_from_float16_memory_maps(tmp_path):
    """Only the sampled rows are read, from any float dtype, and each is L2-normalised."""
    rng = np.random.default_rng(2)
    videos = [np.abs(rng.normal(size=(40, 8))).astype(np.float16) for _ in range(3)]
    maps = []
    for i, v in enumerate(videos):
        np.save(tmp_path / f"{i}.npy", v)
        maps.append(np.load(tmp_path / f"{i}.npy", mmap_mode="r"))
    a = build_memory(maps, size=50, seed=3)
    unit = [(v.astype(np.float32) / np.linalg.norm(v.astype(np.float32), axis=1,
                                                   keepdims=True)) for v in videos]
    b = build_memory([5 * u for u in unit], size=50, seed=3)
    np.testing.assert_allclose(a.bank.numpy(), b.bank.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a.bank.numpy(), axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(a.scale.numpy(), b.scale.numpy(), atol=1e-6)


def test_a_bank_of_one_video_is_refused_not_a_nan_scale():
    big, one = np.eye(5000, 6, dtype=np.float32) + 0.1, np.ones((1, 6), np.float32)
    with pytest.raises(ValueError, match="the 1 sampled bank entries all come from one video"):
        build_memory([big, one], size=1, seed=9)


def test_resume_may_change_the_gate_and_settings_older_runs_lack():
    from stmil.mil.config import TrainConfig

    given = TrainConfig(gate="memory", memory_size=100).to_dict()
    older = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("gate", "memory_size")}
    assert resume_mismatch(older, given) is None
    assert resume_mismatch(older, given | {"lr": 5.0}) == "lr 0.01 recorded vs 5.0 given"
    assert resume_mismatch(older, given | {"self_train": 1}) == \
        "self_train 0 recorded vs 1 given"


def test_one_normal_video_is_refused():
    with pytest.raises(ValueError, match="at least 2 normal training videos, got 1"):
        build_memory([E], size=10, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("memory")
    make_planted(base / "data", base / "feats", n_train=16, n_test=4, n_clips=8, channels=16)
    return base / "data", base / "feats"


def test_gated_training_keeps_the_scorers_weights_and_gates_its_scores(tiny, tmp_path):
    train(*tiny, tmp_path / "plain", gate="none", motion="none", **FAST)
    train(*tiny, tmp_path / "gated", gate="memory", motion="none", memory_size=100, **FAST)
    plain, gated = (load_file(tmp_path / n / "model.safetensors") for n in ("plain", "gated"))
    assert sorted(set(gated) - set(plain)) == ["gate.bank", "gate.scale"]
    assert all(np.array_equal(plain[k], gated[k]) for k in plain)  # the gate is added after
    bank, (lo, hi) = gated["gate.bank"], gated["gate.scale"]
    assert bank.shape == (100, 16) and 0 <= lo < hi <= 2
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1, atol=1e-5)
    assert yaml.safe_load((tmp_path / "gated" / "config.yaml").read_text())["gate"] == "memory"

    x = np.load(tiny[1] / "FightingTest000_x264.npy").astype(np.float32)  # (8, 49, 16)
    model_p, config = load_model(tmp_path / "plain")
    model_g, _ = load_model(tmp_path / "gated")
    u = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    novelty = 1 - (u @ bank.T).max(axis=-1)
    rc = RunConfig.from_recorded(config)
    expected = Detector(model_p, rc).maps(x) * np.clip((novelty - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(Detector(model_g, rc).maps(x), expected, atol=1e-5)


def test_frame_instances_gate_the_clip_means(tiny, tmp_path):
    """The wiring for frame instances: the bank holds clip means, and each clip's one score is
    gated by its mean's gate (MemoryGate itself is checked by hand above)."""
    train(*tiny, tmp_path / "g", gate="memory", instances="frame", memory_size=10**6, **FAST)
    bank = load_file(tmp_path / "g" / "model.safetensors")["gate.bank"]
    assert bank.shape == (6 * 8, 16)  # one clip mean per clip of the 6 training normals
    model, config = load_model(tmp_path / "g")
    x = np.load(tiny[1] / "FightingTest000_x264.npy").astype(np.float32)
    m = x.mean(axis=1)
    u = torch.from_numpy(m / np.linalg.norm(m, axis=-1, keepdims=True))
    gate = model.gate(u).numpy()
    assert 0 < gate.max() and gate.min() < 1
    detector = Detector(model, RunConfig.from_recorded(config))
    got = detector.maps(x)
    model.gate = None
    assert (got == got[:, :1]).all()  # one score per clip, in every cell
    np.testing.assert_allclose(got, detector.maps(x) * gate[:, None], atol=1e-6)


def test_the_memory_holds_only_training_normals(tiny, tmp_path):
    """Validation videos are held out of the bank: it holds every cuboid of the normal training
    videos that are not validation videos, and nothing else."""
    train(*tiny, tmp_path / "g", gate="memory", memory_size=10**6, **FAST)
    bank = load_file(tmp_path / "g" / "model.safetensors")["gate.bank"]
    found = 0
    for p in sorted(tiny[1].glob("Normal_Videos_Train*.npy")):
        x = np.load(p).astype(np.float32).reshape(-1, 16)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        hits = [np.abs(bank - row).max(axis=1).min() < 1e-6 for row in x]
        assert all(hits) or not any(hits), p.name  # a video is in whole or not at all
        found += all(hits)
    labels = np.array([1, 0] * 8)  # make_planted: even-indexed training videos are anomalous
    val = _carve_validation(labels, FAST["val_fraction"], np.random.default_rng(FAST["seed"]))
    assert found == int((~val & (labels == 0)).sum()) == 6  # 8 normal, 2 of them validation
    assert len(bank) == 49 * 8 * found


def test_train_cli_gate_memory_with_one_normal_video_is_one_line(tmp_path, monkeypatch,
                                                                  capsys):
    make_planted(tmp_path / "data", tmp_path / "feats", n_train=3, n_test=2, n_clips=4,
                 channels=8)  # train: 2 anomalous videos, 1 normal
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--data", "data", "--features", "feats", "--out",
                           "run", "--iterations", "2", "--hidden", "8", "--mid", "2",
                           "--n-segments", "2", "--device", "cpu", "--gate", "memory", "--quiet")
    assert code == 1
    assert_one_line_error(err, "data: gate memory needs at least 2 normal training videos "
                               "(validation ones left out), got 1; add normal videos or train "
                               "with gate none")
    assert not (tmp_path / "run").exists()
    # The default (gate auto) does not fail for it: it says so and trains ungated.
    code, _, err = run_cli(capsys, "train", "--data", "data", "--features", "feats", "--out",
                           "run", "--iterations", "2", "--hidden", "8", "--mid", "2",
                           "--n-segments", "2", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert err.splitlines()[0] == (
        "warning: the memory gate needs 2 or more normal training videos (validation ones left "
        "out), this split has 1: training without it (gate none)")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["gate"] == "none"
    assert "gate.bank" not in load_file(tmp_path / "run" / "model.safetensors")


@pytest.mark.parametrize("change, message", [
    (lambda t, c: t.pop("gate.bank"), "the config says gate memory but the file lacks"),
    (lambda t, c: t.__setitem__("gate.bank", t["gate.bank"][:, :3].copy()), "bad memory bank"),
    (lambda t, c: t.__setitem__("gate.scale", np.array([0.5, 0.5], np.float32)),
     "bad memory bank"),
    (lambda t, c: c.__setitem__("gate", "none"), "the config says gate none but the file holds"),
])
def test_a_damaged_gate_is_refused_naming_the_file(tiny, tmp_path, change, message):
    import json

    from safetensors import safe_open

    train(*tiny, tmp_path / "g", gate="memory", memory_size=50, **FAST)
    path = tmp_path / "g" / "model.safetensors"
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    tensors = load_file(path)
    config = json.loads(meta["stmil_config"])
    change(tensors, config)
    save_file(tensors, str(path), metadata={"stmil_config": json.dumps(config)})
    with pytest.raises(ModelError, match=message) as e:
        load_model(tmp_path / "g")
    assert str(path) in str(e.value)
