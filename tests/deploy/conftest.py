"""Fixtures of the export tests: ONNX modules (required under $CI), runs built in place, a run
trained with both gates on real I3D features, and their exports."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch


def require_onnx(names: tuple[str, ...] = ("onnx", "onnxruntime")) -> None:
    """Skip without onnx and onnxruntime (the ``stmil[onnx]`` extra; ``names``: others, as
    ``openvino``); fail under ``$CI``, whose ``make test`` installs them."""
    for name in names:
        try:
            __import__(name)
        except ImportError:
            extra = {"openvino": "openvino", "nncf": "int8"}.get(name, "onnx")
            msg = f"{name} is not installed (pip install 'stmil[{extra}]')"
            if os.environ.get("CI"):
                pytest.fail(f"CI is set but {msg}", pytrace=False)
            pytest.skip(msg)


@pytest.fixture(autouse=True)
def _onnx() -> None:
    require_onnx()


def run_config(grid: int = 7, gate: bool = True, motion: bool = True, size: int = 64,
               **extra: object) -> dict:
    """A run's recorded config (the keys :func:`stmil.mil.run.load_model` requires)."""
    return {"in_dim": 528, "hidden": 32, "mid": 8, "dropout": 0.6, "grid": grid,
            "feature_grid": 7, "supervision": "weak", "endpoint": "Mixed_4e", "size": size,
            "clip_len": 16, "stride": 16, "tail": "drop", "gate": "memory" if gate else "none",
            "motion": "gate" if motion else "none", "motion_scale": 0.05 if motion else None,
            **extra}


def make_run(folder: Path, seed: int = 0, scale: tuple[float, float] = (0.05, 0.3),
             **config: object) -> Path:
    """A run folder holding a randomly initialised scorer (and a memory bank of 64 random
    unit vectors with gate scale ``scale``), as ``stmil train`` saves one."""
    from stmil.mil.bags import l2_normalise
    from stmil.mil.memory import MemoryGate
    from stmil.mil.model import Scorer
    from stmil.mil.run import save_model

    cfg = run_config(**config)
    torch.manual_seed(seed)
    scorer = Scorer(cfg["in_dim"], cfg["hidden"], cfg["mid"], cfg["dropout"])
    if cfg["gate"] == "memory":
        bank = l2_normalise(np.random.default_rng(seed).random((64, 528), dtype=np.float32))
        scorer.gate = MemoryGate(torch.from_numpy(bank), torch.tensor(scale))
    folder.mkdir(parents=True)
    save_model(folder / "model.safetensors", scorer, cfg)
    return folder


@pytest.fixture(scope="session")
def gated_run(tmp_path_factory, extractor) -> Path:
    """A run trained (top-k MIL, memory gate, motion gate) on real I3D features, input size
    64, of the planted scene of tests/live/scene.py: 4 anomalous and 4 normal videos."""
    from stmil.features.extract import ExtractSettings, extract_video
    from stmil.features.store import write_features
    from stmil.mil.train import train
    from tests.conftest import write_video
    from tests.live.scene import EVENT_BOX, SIZE, scene_frames
    from tests.planted import _write_vatic

    base = tmp_path_factory.mktemp("gated")
    (base / "videos").mkdir()
    settings = ExtractSettings(size=SIZE)
    made = {}
    for kind, events, seed in (("a", [(16, 32)], 1), ("n", [], 2)):
        video = write_video(base / "videos" / f"{kind}.mkv", scene_frames(48, events, seed))
        made[kind] = extract_video(video, extractor, settings)
    data, feats = base / "data", base / "feats"
    (data / "readme" / "Txt annotations").mkdir(parents=True)
    feats.mkdir()
    rng = np.random.default_rng(0)
    ids = []
    for i in range(8):
        vid = f"{'Fighting' if i % 2 == 0 else 'Normal_Videos_'}{i:03d}_x264"
        array, meta = made["a" if i % 2 == 0 else "n"]
        x = array.astype(np.float32)
        x = np.abs(x + 0.2 * rng.normal(size=x.shape) * x.std()).astype(np.float16)
        motion = meta.motion * (1 + 0.1 * rng.random(meta.motion.shape))
        write_features(feats, vid, x, dataclasses.replace(
            meta, source=f"{vid}.mp4", source_bytes=None, source_mtime_ns=None,
            motion=np.round(motion, 6)))
        ids.append(vid)
        if i % 2 == 0:
            _write_vatic(data / "readme" / "Txt annotations" / f"{vid}.txt",
                         np.array(EVENT_BOX), 16, 32, 48)
    (data / "readme" / "Train_split_AD.txt").write_text("\n".join(ids) + "\n")
    run = base / "run"
    train(data, feats, run, iterations=30, hidden=32, mid=8, n_segments=4, seed=0,
          device="cpu", progress=False, method="topk", gate="memory", motion="gate")
    return run


@pytest.fixture(scope="session")
def gated_export(gated_run, tmp_path_factory) -> Path:
    """``gated_run`` exported (fp32)."""
    from stmil.deploy.export import export_model

    out = tmp_path_factory.mktemp("export") / "exported"
    export_model(out, gated_run)
    return out


@pytest.fixture(scope="session")
def export_224(tmp_path_factory) -> Path:
    """The default feature extractor (Mixed_4e, grid 7, 16 x 224 x 224), fp32, no run."""
    from stmil.deploy.export import export_model

    out = tmp_path_factory.mktemp("export224") / "exported"
    export_model(out)
    return out


@pytest.fixture(scope="session")
def gated_export_openvino(gated_run, tmp_path_factory) -> Path:
    """``gated_run`` exported as OpenVINO IR (fp32)."""
    from stmil.deploy.export import export_model

    require_onnx(("openvino",))
    out = tmp_path_factory.mktemp("export-ov") / "exported"
    export_model(out, gated_run, format="openvino")
    return out


@pytest.fixture(scope="session")
def openvino_224(tmp_path_factory) -> Path:
    """The default feature extractor as OpenVINO IR, fp32, no run."""
    from stmil.deploy.export import export_model

    require_onnx(("openvino",))
    out = tmp_path_factory.mktemp("ov224") / "exported"
    export_model(out, format="openvino")
    return out
