"""A trained run, ready to score: the one way every reader scores with a run.

:class:`Detector` holds the scorer (with its memory gate, when the run has one), the motion
gate and the run's typed :class:`RunConfig`. Evaluation, ``score``, ``gt`` / ``export``,
``calibrate``, ``events`` and ``watch`` load a run with :meth:`Detector.load` and call
:meth:`Detector.maps`; none of them reads a run's config or applies a gate itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from stmil.errors import ConfigError, ModelError
from stmil.features.motion import motion_gate
from stmil.features.store import FeatureError, FeatureMeta
from stmil.mil.bags import l2_normalise
from stmil.mil.model import Scorer
from stmil.mil.run import ModelConfig, load_model

#: Feature settings a model must be fed (its features' metadata must agree).
FEATURE_KEYS = ("endpoint", "size", "clip_len", "stride")


@dataclass(frozen=True)
class RunConfig(ModelConfig):
    """What a run's model was trained on and how it scores (:class:`ModelConfig`, its one
    declaration); ``recorded`` is the whole resolved config the run recorded (read-only), for
    reports."""

    recorded: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_recorded(cls, config: Mapping[str, Any], where: str | Path | None = None,
                      fix: str | None = None) -> RunConfig:
        """From a recorded config (a model file's, which :func:`~stmil.mil.run.load_model`
        has checked, or an export manifest's): a bad or missing key is a :class:`ModelError`
        naming ``where`` and the key and ending in ``fix``."""
        return cls.from_mapping({**config, "recorded": MappingProxyType(dict(config))}, where,
                                fix=fix, error=ModelError, others="ignore")


class Detector:
    """A run's scorer, gates and config. ``Detector.load(run)``, then :meth:`maps`."""

    def __init__(self, scorer: Scorer, config: RunConfig, run: Path | str = "") -> None:
        self.scorer = scorer.eval()
        self.config = config
        self.run = Path(run)

    @classmethod
    def load(cls, run: str | Path) -> Detector:
        """The run folder's model (:class:`ModelError` naming the file when it is not one)."""
        scorer, config = load_model(run)  # its ModelConfig checked there
        return cls(scorer, RunConfig.from_recorded(config), run)

    def check_features(self, meta: FeatureMeta | Mapping[str, Any], where: str | Path
                       ) -> None:
        """:class:`ConfigError` naming ``where`` unless features of metadata ``meta`` are
        what the model was trained on (endpoint, size, clip length, stride, grid, channels).
        ``meta``: a feature file's, or the same keys of features to come (a live stream's)."""
        c = self.config
        have = ({k: getattr(meta, k) for k in (*FEATURE_KEYS, "grid", "channels")}
                if isinstance(meta, FeatureMeta) else meta)
        for key in FEATURE_KEYS:
            if getattr(c, key) != have.get(key):
                raise ConfigError(f"{where}: model was trained on {key}={getattr(c, key)!r} "
                                  f"features, these have {have.get(key)!r}")
        if c.feature_grid != have.get("grid"):
            raise ConfigError(f"{where}: model was trained on grid {c.feature_grid} features, "
                              f"these have grid {have.get('grid')}")
        if c.in_dim != have.get("channels", c.in_dim):
            raise ConfigError(f"{where}: model takes {c.in_dim}-channel features, these have "
                              f"{have.get('channels')}")

    def check_scores_video(self) -> None:
        """:class:`ConfigError` naming the run when its features cannot be computed from
        video (it was trained on imported features: score their files instead)."""
        if self.config.endpoint.startswith("import:"):
            raise ConfigError(f"{self.run}: trained on imported features "
                              f"({self.config.endpoint}), which stmil cannot compute from "
                              "video; score imported feature files, or train on features "
                              "stmil extract made")

    @torch.no_grad()
    def maps(self, features: np.ndarray, motion: np.ndarray | None = None,
             where: str = "these features") -> np.ndarray:
        """Cuboid scores of every clip: features ``(n_clips, N, C)`` -> ``(n_clips, N)`` float32.

        Each instance is L2-normalised as in training. A grid-1 model scores the mean of the
        clip's cuboids once, and that score fills all N cells (it cannot say where). A run
        with ``motion: gate`` multiplies the scores by the motion gate of ``motion``
        ``(n_clips, N)`` (:mod:`stmil.features.motion`); :class:`FeatureError` naming
        ``where`` when it is None.
        """
        if self.config.motion == "gate":
            if motion is None:
                raise FeatureError(f"{where}: no motion energy, which this run's motion gate "
                                   "needs (features of an older stmil, or imported); "
                                   "re-extract them with stmil extract --overwrite, or use a "
                                   "run trained with --motion none")
            return self._maps(features) * motion_gate(motion, self.config.motion_scale)
        return self._maps(features)

    def _maps(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        if self.config.grid == 1:
            x = x.mean(axis=1, keepdims=True)
        s = self.scorer(torch.from_numpy(l2_normalise(x))).numpy()
        if not np.isfinite(s).all():
            raise ModelError("the model gives NaN or infinite scores: its weights are not "
                             "finite (retrain it)")
        return np.broadcast_to(s, (x.shape[0], features.shape[1])).astype(np.float32)
