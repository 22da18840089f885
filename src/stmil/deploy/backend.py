"""An exported model behind stmil's own interfaces, for ``--backend onnxruntime``.

:class:`ExportedDetector` is a :class:`~stmil.mil.detector.Detector` whose scores come from the
export's scorer graph (same checks, same errors), and :meth:`ExportedDetector.feature_extractor`
gives an :class:`OnnxFeatureExtractor` that stands in for
:class:`~stmil.features.extract.FeatureExtractor` in the decoding pipeline
(:func:`~stmil.features.extract.extract_videos`): same clips, same decoding, same outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stmil.deploy.manifest import MANIFEST
from stmil.deploy.runtime import ExportedModel
from stmil.errors import ModelError
from stmil.features.store import FeatureError
from stmil.mil.detector import Detector, RunConfig


class OnnxFeatureExtractor:
    """Clips ``(B, 3, T, S, S)`` tensor -> cuboids ``(B, G*G, C)`` tensor through the export's
    feature graph; the attributes the extraction pipeline reads (``device`` is the CPU: the
    pipeline hands it CPU tensors, the session runs on its own providers)."""

    def __init__(self, model: ExportedModel) -> None:
        f = model.manifest.features
        self.model = model
        self.endpoint, self.grid, self.channels = f["endpoint"], f["grid"], f["channels"]
        # an fp32 graph computes PyTorch's fp32 features (to ~1e-6); other precisions are
        # none of the feature files' (fp32, bf16)
        self.precision = "fp32" if model.manifest.data["precision"] == "fp32" else None
        self.device = torch.device("cpu")

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        feats, _ = self.model.features(clips.detach().cpu().numpy())
        return torch.from_numpy(feats)


class ExportedDetector(Detector):
    """A :class:`Detector` scoring through an export made with ``--model RUN``."""

    def __init__(self, model: ExportedModel) -> None:
        scorer = model.manifest.scorer
        if scorer is None:
            raise ModelError(f"{model.manifest.folder}: exported without --model, so it holds "
                             "no scorer; export with stmil export-model --model RUN")
        self.model = model
        self.scorer = None  # type: ignore[assignment]  # the graph scores
        self.config = RunConfig.from_recorded(scorer["config"])
        self.run = model.manifest.folder

    @classmethod
    def load(cls, run: str | Path, device: str = "auto") -> ExportedDetector:
        """The export folder ``run`` (a run folder is refused, naming the command that
        exports it)."""
        folder = Path(run)
        if not (folder / MANIFEST).is_file() and (folder / "model.safetensors").is_file():
            raise ModelError(f"{folder}: a run folder, not an export; export it first with "
                             f"stmil export-model --out DIR --model {folder}, then pass "
                             "--model DIR")
        return cls(ExportedModel(folder, device))

    def feature_extractor(self, device: str = "auto") -> OnnxFeatureExtractor:
        """The export's feature graph (``device`` was chosen when the export was loaded)."""
        return OnnxFeatureExtractor(self.model)

    def maps(self, features: np.ndarray, motion: np.ndarray | None = None,
             where: str = "these features") -> np.ndarray:
        """As :meth:`Detector.maps`, through the scorer graph."""
        if self.config.motion == "gate" and motion is None:
            raise FeatureError(f"{where}: no motion energy, which this run's motion gate "
                               "needs (features of an older stmil, or imported); "
                               "re-extract them with stmil extract --overwrite, or use a "
                               "run trained with --motion none")
        return self.model.maps(features, motion)
