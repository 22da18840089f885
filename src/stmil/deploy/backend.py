"""An exported model behind stmil's own interfaces, for ``--backend onnxruntime``.

:class:`ExportedDetector` is a :class:`~stmil.mil.detector.Detector` whose scores come from the
export's scorer graph (same checks, same errors), and :meth:`ExportedDetector.feature_extractor`
gives an :class:`OnnxFeatureExtractor` that stands in for
:class:`~stmil.features.extract.FeatureExtractor` in the decoding pipeline
(:func:`~stmil.features.extract.extract_videos`): same clips, same decoding, same outputs.
:func:`feature_extractor` picks the extractor of ``--backend`` for ``extract`` and ``watch``:
the feature graph of ``--exported DIR``, else of an export made once into stmil's cache
(:func:`cached_export`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stmil import __version__
from stmil.atomic import locked
from stmil.deploy.manifest import AGAIN, MANIFEST, RUNTIMES, check_export, read_manifest
from stmil.deploy.runtime import ExportedModel
from stmil.errors import ConfigError, ModelError
from stmil.features.store import FeatureError
from stmil.mil.detector import Detector, RunConfig


class OnnxFeatureExtractor:
    """Clips ``(B, 3, T, S, S)`` tensor -> cuboids ``(B, G*G, C)`` tensor through the export's
    feature graph (ONNX Runtime or OpenVINO); the attributes the extraction pipeline reads
    (``device`` is the CPU: the pipeline hands it CPU tensors, the session runs on its own
    providers). ``backend`` and
    ``precision`` (the export's: fp32 or fp16) go into the feature files it makes: its fp32
    features are PyTorch's to ~1e-6 relative, not bitwise, so they never mix with PyTorch's in
    one folder (:data:`~stmil.features.store.CONSISTENT_KEYS`)."""

    def __init__(self, model: ExportedModel) -> None:
        f = model.manifest.features
        self.model, self.backend = model, model.backend
        self.endpoint, self.grid, self.channels = f["endpoint"], f["grid"], f["channels"]
        self.precision = model.manifest.data["precision"]
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
        self.config = RunConfig.from_recorded(
            scorer["config"], f"{model.manifest.folder / MANIFEST}: scorer: config", AGAIN)
        self.run = model.manifest.folder

    @classmethod
    def load(cls, run: str | Path, device: str = "auto", backend: str | None = None
             ) -> ExportedDetector:
        """The export folder ``run`` run by ``backend`` (None: the export's runtime; another
        is refused), a run folder is refused, naming the command that exports it."""
        folder = Path(run)
        if not (folder / MANIFEST).is_file() and (folder / "model.safetensors").is_file():
            fmt = " --format openvino" if backend == "openvino" else ""
            raise ModelError(f"{folder}: a run folder, not an export; export it first with "
                             f"stmil export-model --out DIR --model {folder}{fmt}, then pass "
                             "--model DIR")
        return cls(ExportedModel(folder, device, backend))

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


#: Sub-folder of stmil's cache (:func:`stmil.features.weights.cache_dir`, where the converted
#: weights live) holding the feature graphs exported for ``--backend`` without ``--exported``.
CACHE = "exported"
#: The export format each exported backend runs.
FORMAT_OF = {runtime: fmt for fmt, runtime in RUNTIMES.items()}


def cached_export(endpoint: str = "Mixed_4e", grid: int = 7, size: int = 224,
                  clip_len: int = 16, format: str = "onnx") -> Path:
    """The fp32 feature-graph export of these settings in stmil's cache, exported on first use.

    One folder per settings, weights and stmil version (``<cache>/exported/...``); it is
    written by :func:`~stmil.deploy.export.export_model` (checked against PyTorch, committed
    as one unit through the folder's ledger) under a lock on ``<cache>/exported``, so
    concurrent processes export it once; a folder whose graph no longer matches its manifest
    (changed or damaged) is exported again, a file there that stmil did not write is refused.
    """
    # deferred: the cache root lives beside the weights (torch); exporting needs torch and onnx
    from stmil.deploy.export import ClipSettings, export_model
    from stmil.features.weights import KINETICS400_RGB, cache_dir

    root = cache_dir() / CACHE
    name = (f"{KINETICS400_RGB.name}-{KINETICS400_RGB.sha256[:12]}-{endpoint}-g{grid}-s{size}"
            f"-t{clip_len}-fp32-{format}-stmil{__version__}")
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        folder = root / name
        try:
            read_manifest(folder)
            return folder
        except ModelError:
            pass  # absent or damaged: (re-)export it
        export_model(folder, format=format,  # extract checked new settings; a run's are kept
                     settings=ClipSettings(endpoint, grid, size, clip_len, recorded=True))
    return folder


def feature_extractor(backend: str, exported: str | Path | None, endpoint: str, grid: int,
                      size: int, clip_len: int, device: str = "auto", precision: str = "fp32"):
    """The feature extractor of ``--backend``: PyTorch's
    :class:`~stmil.features.extract.FeatureExtractor` at ``precision``, or an
    :class:`OnnxFeatureExtractor` on the feature graph of the export folder ``exported`` (its
    own precision), else of :func:`cached_export` (fp32). Either maps clips ``(B, 3, clip_len,
    size, size)`` to cuboids ``(B, grid * grid, C)``."""
    if backend == "torch":
        # deferred: the network loads for the torch backend only
        from stmil.features.extract import FeatureExtractor

        return FeatureExtractor(endpoint, grid, device, precision)
    if precision != "fp32":
        raise ConfigError(f"--precision {precision} is PyTorch's; --backend {backend} runs the "
                          "export's own precision (fp32, or fp16 with --exported DIR made by "
                          "stmil export-model --precision fp16)")
    folder = Path(exported) if exported is not None else cached_export(
        endpoint, grid, size, clip_len, FORMAT_OF[backend])
    model = ExportedModel(folder, device, backend)
    check_export(model.manifest, endpoint, grid, size, clip_len)
    return OnnxFeatureExtractor(model)
