"""Settings of the commands whose library lives in a top-level module that loads torch
(``score``: :mod:`stmil.score`, ``demo``: :mod:`stmil.demo`) or a web stack (``serve``), kept
here so that the CLI builds their flags without loading either (:mod:`stmil.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stmil.deploy import BACKENDS
from stmil.device import DEVICES
from stmil.features.pipeline_config import ExtractSettings, backend_rules
from stmil.mil.config import MAX_ITERATIONS
from stmil.settings import Settings, setting, setting_like
from stmil.synth.settings import MAX_VIDEOS, SynthSettings


@dataclass(frozen=True)
class ScoreOptions(Settings):
    """``stmil score`` (:func:`stmil.score.score_inputs`); ``--workers`` is
    :class:`~stmil.features.pipeline_config.PipelineConfig`'s."""

    inputs: list[Path] = setting(help="videos, feature files (.npy) or folders", positional=True)
    model: Path = setting(help="run folder with model.safetensors (or an export folder, with "
                          "--backend onnxruntime or openvino)")
    out: Path = setting(help="folder for <id>.scores.json")
    threshold: float | None = setting(None, "box = union of cuboids scoring >= THRESHOLD "
                                      "(cuboid scores are probabilities; default: top cuboid)",
                                      lo=0, hi=1)
    overlay: bool = setting(False, "also write <id>.overlay.mp4")
    device: str = setting("auto", "torch device", choices=DEVICES)
    backend: str = setting("torch", "what runs I3D: torch, or an exported graph run by "
                           "onnxruntime or openvino (stmil[onnx] / stmil[openvino]; "
                           "docs/deploy.md), then --model may also be a folder stmil "
                           "export-model --model RUN wrote, whose graphs compute the scores too",
                           choices=BACKENDS)
    exported: Path | None = setting_like(ExtractSettings, "exported")

    def rules(self) -> None:
        backend_rules(self.backend, self.exported)


DEMO_ITERATIONS = 150  # training iterations of each demo run unless --iterations


@dataclass(frozen=True)
class DemoSettings(Settings):
    """``stmil demo`` (:func:`stmil.demo.run_demo`)."""

    out: Path = setting("demo-out", "output folder")
    footage: Path | None = setting(None, "real footage, e.g. data/vtest.avi")
    n_videos: int = setting(48, "videos, half normal and half anomalous (at least 8: each "
                            "split needs both kinds)", flag="videos", even=True, lo=8,
                            hi=MAX_VIDEOS)
    n_frames: int = setting_like(SynthSettings, "n_frames", 160)
    seed: int = setting_like(SynthSettings, "seed", 0)
    iterations: int | None = setting(None, "training iterations of each run (default "
                                     f"{DEMO_ITERATIONS})",
                                     lo=1, hi=MAX_ITERATIONS)
    val_fraction: float = setting(0.25, lo=0, lo_open=True, hi=1, hi_open=True, cli=False)
    n_overlays: int = setting(4, lo=0, hi=1000, cli=False)
    device: str = setting("auto", "torch device", choices=DEVICES)


@dataclass(frozen=True)
class ServeOptions(Settings):
    """``stmil serve`` (:func:`stmil.serve.app.serve`)."""

    dir: Path = setting(help="a demo output, or a folder holding run folders with their "
                        "dataset and features, or stmil score outputs (served read-only)",
                        positional=True)
    host: str = setting("127.0.0.1", "address to listen on (127.0.0.1: this machine only)")
    port: int = setting(8000, "TCP port", lo=1, hi=65535)
