"""An export folder run with ONNX Runtime or OpenVINO: numpy in, numpy out, no PyTorch.

:class:`ExportedModel` verifies the folder (:func:`~stmil.deploy.manifest.read_manifest`) and
runs its graphs: :meth:`~ExportedModel.features` (clips -> cuboid features and motion energy)
and :meth:`~ExportedModel.maps` (features -> cuboid scores, the run's gates included). It
imports neither torch nor PyAV, so a runtime that decodes frames itself needs only numpy and
``onnxruntime`` (or ``openvino`` for an OpenVINO export); :mod:`stmil.deploy.backend` plugs it
into stmil's own decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stmil.deploy.manifest import RUNTIMES, ExportManifest, read_manifest
from stmil.errors import ConfigError, ModelError, StmilError

EXTRA = "pip install 'stmil[onnx]'"
OPENVINO_EXTRA = "pip install 'stmil[openvino]'"
#: Instances scored per run of the scorer graph: bounds the memory gate's similarity matrix
#: (rows x bank entries), as :data:`stmil.mil.memory.CHUNK` does in PyTorch.
ROWS = 1024


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module; :class:`StmilError` naming the extra when it is missing."""
    try:
        import onnxruntime
    except ImportError:
        raise StmilError(f"running an exported model needs the onnx extra (onnxruntime is "
                         f"missing): {EXTRA}") from None
    return onnxruntime


def require_openvino() -> Any:
    """The ``openvino`` module; :class:`StmilError` naming the extra when it is missing."""
    try:
        import openvino
    except ImportError:
        raise StmilError(f"running an OpenVINO export needs the openvino extra (openvino is "
                         f"missing): {OPENVINO_EXTRA}") from None
    return openvino


class OpenVinoSession:
    """An OpenVINO graph (IR ``.xml`` or ONNX) compiled for its CPU plugin, behind ONNX
    Runtime's ``run(None, feeds)``: the outputs ``names`` in that order. Arithmetic is float32
    (``INFERENCE_PRECISION_HINT``: on a CPU with bf16 or AMX OpenVINO would otherwise use
    bf16, about 1e-2 off)."""

    def __init__(self, path: Path | str, names: list[str]) -> None:
        ov = require_openvino()
        self.compiled = ov.Core().compile_model(str(path), "CPU",
                                                {"INFERENCE_PRECISION_HINT": "f32"})
        self.names = names

    def run(self, _outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.compiled(feeds)
        return [np.asarray(result[self.compiled.output(n)]) for n in self.names]


def providers(device: str = "auto") -> list[str]:
    """ONNX Runtime execution providers for ``--device``: ``cpu``; ``cuda`` (refused when
    this onnxruntime has no CUDA provider); ``auto``: CUDA when present, else CPU."""
    ort = require_onnxruntime()
    have = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in have:
        raise ConfigError("--device cuda was asked for, but this onnxruntime has no CUDA "
                          "provider (install onnxruntime-gpu)")
    if device not in ("auto", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda, got {device!r}")
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class ExportedModel:
    """The graphs of an export folder, verified, each loaded on first use.

    ``device``: as :func:`providers` (OpenVINO: its CPU plugin, ``auto`` or ``cpu``).
    ``backend``: the runtime, which must be the export's (:data:`RUNTIMES`: ``onnxruntime``
    for ``--format onnx``, ``openvino`` for ``--format openvino``); None: the export's.
    Sessions use the runtime's defaults otherwise (all graph optimisations, one thread per
    physical core).
    """

    def __init__(self, folder: Path | str, device: str = "auto",
                 backend: str | None = None) -> None:
        self.manifest: ExportManifest = read_manifest(folder)
        fmt = self.manifest.graph_format
        self.backend = RUNTIMES[fmt]
        if backend is not None and backend != self.backend:
            raise ConfigError(f"{self.manifest.folder}: an {fmt} export, which --backend "
                              f"{backend} does not run; use --backend {self.backend}, or "
                              f"export with stmil export-model --format "
                              f"{dict(map(reversed, RUNTIMES.items())).get(backend, 'onnx')}")
        if self.backend == "openvino":
            if device not in ("auto", "cpu"):
                raise ConfigError(f"--device {device}: stmil runs OpenVINO exports on the CPU; "
                                  "use --device cpu, or an ONNX export for CUDA")
            self.providers: list[str] = []
        else:
            self.providers = providers(device)
        self._sessions: dict[str, Any] = {}

    @property
    def has_scorer(self) -> bool:
        return self.manifest.scorer is not None

    def session(self, which: str) -> Any:
        """The ``features`` or ``scorer`` graph's ``InferenceSession``."""
        if which not in self._sessions:
            entry = getattr(self.manifest, which)
            if entry is None:
                raise ModelError(f"{self.manifest.folder}: exported without a run, so it holds "
                                 "no scorer; export with stmil export-model --model RUN")
            path = self.manifest.path(entry)
            if self.backend == "openvino":
                self._sessions[which] = OpenVinoSession(path, list(entry["outputs"]))
            else:
                self._sessions[which] = require_onnxruntime().InferenceSession(
                    str(path), providers=self.providers)
        return self._sessions[which]

    def features(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clips ``(B, 3, T, S, S)`` in ``[-1, 1]`` -> features ``(B, G*G, C)`` float32 and
        motion energy ``(B, G*G)`` float64, rounded as ``stmil extract`` stores it."""
        want = tuple(self.manifest.features["inputs"]["clips"][1:])
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        if clips.ndim != 5 or clips.shape[1:] != want:
            raise ConfigError(f"{self.manifest.folder}: the feature graph takes clips of shape "
                              f"(B, {', '.join(map(str, want))}), got {clips.shape}")
        feats, motion = self.session("features").run(None, {"clips": clips})
        decimals = self.manifest.features["motion_decimals"]
        return feats, np.round(motion.astype(np.float64), decimals)

    def maps(self, features: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        """Cuboid scores ``(n_clips, N)`` float32 of features ``(n_clips, N, C)`` (and motion
        energy ``(n_clips, N)`` for a run with a motion gate), in chunks of :data:`ROWS`
        instances."""
        session = self.session("scorer")
        x = np.asarray(features, dtype=np.float32)
        gated = "motion" in self.manifest.scorer["inputs"]
        if gated and motion is None:
            raise ConfigError(f"{self.manifest.folder}: the run's motion gate needs the motion "
                              "energy of the clips (the feature graph's second output)")
        step = max(1, ROWS // max(1, x.shape[1]))
        out = []
        for k in range(0, len(x), step):
            feeds = {"features": np.ascontiguousarray(x[k:k + step])}
            if gated:
                feeds["motion"] = np.asarray(motion[k:k + step], dtype=np.float32)
            out.append(session.run(None, feeds)[0])
        maps = np.concatenate(out) if out else np.zeros(x.shape[:2], np.float32)
        if not np.isfinite(maps).all():
            raise ModelError(f"{self.manifest.path(self.manifest.scorer)}: NaN or infinite "
                             "scores; export the run again")
        return maps
