"""``TrainConfig``: every training hyperparameter, typed and validated in one place.

The CLI's ``train`` flags and the keys of a ``--config`` YAML file are generated from its fields
(:mod:`stmil.settings`, the one validation engine), and a run's ``config.yaml`` is a valid
``--config``. Values are checked strictly: a YAML ``skip_missing: "false"`` is refused rather
than read as true, ``hidden: 0`` or ``lr: nan`` are refused with the rule they break.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stmil.datasets import FORMATS as DATASET_FORMATS
from stmil.device import DEVICES
from stmil.errors import ConfigError
from stmil.settings import Settings, collect, read_yaml_mapping, require, setting

SUPERVISION = ("weak", "boxes")
METHODS = ("auto", "paper", "topk")
INSTANCES = ("cuboid", "frame")
SELF_TRAIN_INITS = ("continue", "fresh")
GATES = ("auto", "none", "memory")
MOTIONS = ("auto", "none", "gate")
FORMATS = ("auto", *DATASET_FORMATS)

# Settings a resumed training may change: they do not alter what the checkpoint has learned
# (the memory gate is built after the training loop, never checkpointed).
RESUMABLE = ("iterations", "checkpoint_every", "device", "gate", "memory_size", "motion")
# What a run whose config.yaml predates a setting was trained with, where that differs from
# today's default (stmil 0.x trained Sultani's loss, ungated, before --method, --gate and
# --motion).
PREDATING = {"method": "paper", "gate": "none", "motion": "none"}
MAX_ITERATIONS = 10**9
MAX_BATCH = 100_000  # bags per batch
MAX_WEIGHT = 1e6  # a loss weight (float32 arithmetic stays finite far beyond)
MAX_INSTANCES = 1_000_000
MAX_UNITS = 65_536  # units of a scorer layer


@dataclass(frozen=True)
class TrainConfig(Settings):
    """The hyperparameters of :func:`stmil.mil.train.train` (paths and I/O options excluded)."""

    format: str = setting("auto", "dataset layout; auto: detected from the files",
                          choices=FORMATS)
    instances: str = setting("cuboid", "what a bag's instances are: cuboid (the method: each "
                             "segment's G x G cuboids) or frame (the video-segment baseline of "
                             "Sultani et al.: one whole-frame instance per segment)",
                             choices=INSTANCES)
    supervision: str = setting("weak", "boxes: the boxes-supervised reference (upper bound)",
                               choices=SUPERVISION)
    n_segments: int = setting(32, "temporal segments per bag", lo=1, hi=10_000)
    batch_anomalous: int = setting(30, "anomalous bags per batch", lo=1, hi=MAX_BATCH)
    batch_normal: int = setting(30, "normal bags per batch", lo=1, hi=MAX_BATCH)
    iterations: int = setting(3000, "training iterations (a resumed run continues to this "
                              "total)", lo=1, hi=MAX_ITERATIONS)
    lr: float = setting(0.01, "Adagrad learning rate", lo=0, lo_open=True, hi=1000)
    weight_decay: float = setting(1e-3, "L2 weight decay", lo=0, hi=1000)
    lambda1: float = setting(8e-5, "weight of the temporal smoothness term", lo=0,
                             hi=MAX_WEIGHT)
    lambda2: float = setting(8e-5, "weight of the sparsity term", lo=0, hi=MAX_WEIGHT)
    method: str = setting("auto", "weak loss: topk (hinge on the mean of the top-k instances, "
                          "and every instance of every normal bag a negative), paper (Sultani's "
                          "MIL ranking loss on each bag's max instance, exactly as the paper; "
                          "ungated unless --gate memory), or auto (the default): topk for weak "
                          "cuboid instances on grid > 1 features, paper for frame instances and "
                          "grid-1 features (Sultani's video-segment setting) and for boxes "
                          "supervision", choices=METHODS)
    topk: int = setting(3, "method topk: instances averaged per anomalous bag", lo=1,
                        hi=MAX_INSTANCES)
    neg_weight: float = setting(1.0, "method topk: weight of the normal-instances BCE term",
                                lo=0, hi=MAX_WEIGHT)
    lambda_tv: float = setting(0.0, "weight of the total variation of anomalous score maps over "
                               "4-neighbour cuboids and adjacent segments (0: off)", lo=0,
                               hi=MAX_WEIGHT)
    self_train: int = setting(0, "rounds of pseudo-label self-training after the MIL stage (0: "
                              "off): the top cuboids of the top segments of each anomalous "
                              "training video become positives, every cuboid of the normal "
                              "training videos negatives, and the scorer is retrained with "
                              "class-balanced BCE; a round is kept only if the validation AUC "
                              "does not drop (needs val_fraction > 0)", lo=0, hi=100)
    self_train_segments: int = setting(2, "self-training: top-scoring segments (distinct clip "
                                       "spans) per anomalous training video", lo=1, hi=10_000)
    self_train_cuboids: int = setting(3, "self-training: top-scoring cuboids per such segment",
                                      lo=1, hi=MAX_INSTANCES)
    self_train_iterations: int = setting(50, "self-training: iterations per round", lo=1,
                                         hi=MAX_ITERATIONS)
    self_train_init: str = setting("continue", "self-training: each round continues from the "
                                   "current model, or trains a fresh scorer",
                                   choices=SELF_TRAIN_INITS)
    gate: str = setting("auto", "auto (the default): memory for method topk with weak "
                        "supervision and cuboid instances on grid > 1 features (with 2 or more "
                        "normal training videos), none otherwise; none: the scorer's scores as "
                        "they are; memory: after training, keep a bank of the normal training "
                        "videos' instances and multiply each test score by the instance's "
                        "novelty against it, rescaled so that the median normal instance gets 0 "
                        "(what normal videos showed, anywhere in the frame, scores 0; "
                        "docs/method.md)", choices=GATES)
    motion: str = setting("auto", "auto (the default): gate for method topk with weak "
                          "supervision and cuboid instances on grid > 1 features that carry "
                          "motion energy (extracted by this stmil), none otherwise; none: no "
                          "motion prior; gate: multiply each test score by min(1, m / q), m the "
                          "cuboid's motion energy in the clip and q the 90th percentile of the "
                          "normal training videos' (a static cuboid scores 0; docs/method.md)",
                          choices=MOTIONS)
    memory_size: int = setting(16384, "gate memory: at most this many bank entries (a seeded "
                               "sample of the normal training instances; 4 bytes x feature size "
                               "each in the model file; scoring time grows with it: "
                               "docs/method.md)", lo=1, hi=10_000_000)
    hidden: int = setting(512, "units of the scorer's first layer", lo=1, hi=MAX_UNITS)
    mid: int = setting(32, "units of the scorer's second layer", lo=1, hi=MAX_UNITS)
    dropout: float = setting(0.6, "dropout probability, shared per bag", lo=0, hi=1,
                             hi_open=True)
    overlap: float = setting(0.25, "boxes supervision: a cuboid is positive when a box covers "
                             "this fraction of it", lo=0, lo_open=True, hi=1)
    seed: int = setting(0, "random seed (training is deterministic for a seed)", lo=0,
                        hi=2**32 - 1)
    val_fraction: float = setting(0.0, "fraction of train held out for validation and model "
                                  "selection", lo=0, hi=1, hi_open=True)
    val_every: int = setting(100, "iterations between validation checks", lo=1,
                             hi=MAX_ITERATIONS)
    patience: int = setting(0, "stop after this many checks without validation gain (0: "
                            "never)", lo=0, hi=MAX_ITERATIONS)
    checkpoint_every: int = setting(200, "iterations between checkpoints (for --resume)", lo=1,
                                    hi=MAX_ITERATIONS)
    skip_missing: bool = setting(False, "leave out listed videos that have no features "
                                 "(logged)")
    device: str = setting("auto", "torch device", choices=DEVICES)

    def rules(self) -> None:
        require(not (self.self_train and self.val_fraction == 0),
                "{self_train} needs a validation split to keep or undo its rounds: set "
                "{val_fraction} > 0 (e.g. 0.25)", "self_train", "val_fraction")
        require(not (self.self_train and self.supervision == "boxes"),
                "{self_train} applies to weak supervision; set {self_train} 0 for "
                "{supervision} boxes", "self_train", "supervision")

    def resolve_auto(self, grid: int, normal_videos: int, motion: bool = True) -> TrainConfig:
        """This config with ``auto`` settings replaced by what they stand for, for a model of
        ``grid`` x ``grid`` instances per clip (1: frame instances or grid-1 features) trained
        on ``normal_videos`` normal videos (validation ones left out). ``method`` auto: topk
        for weak supervision and a grid above 1, paper otherwise (grid 1, and boxes
        supervision, whose loss is neither). ``gate`` auto: ``memory`` for method topk with
        weak supervision, a grid above 1 and the 2 normal videos the gate needs (the default
        detector, as measured in docs/method.md), ``none`` otherwise (``--method paper`` is the
        paper's method as it was). ``motion`` auto: ``gate`` for method topk with weak
        supervision and a grid above 1 when the features carry motion energy (``motion``),
        ``none`` otherwise."""
        weak_cuboids = self.supervision == "weak" and grid > 1
        method = ("topk" if weak_cuboids else "paper") if self.method == "auto" else self.method
        default = method == "topk" and weak_cuboids  # the default detector's setting
        gate = self.gate
        if gate == "auto":
            gate = "memory" if default and normal_videos >= 2 else "none"
        prior = self.motion
        if prior == "auto":
            prior = "gate" if default and motion else "none"
        return dataclasses.replace(self, method=method, gate=gate, motion=prior)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (YAML and JSON safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path | None = None) -> TrainConfig:
        """A config from a mapping of field names; unknown keys are refused naming ``where``."""
        return cls.from_mapping(values, where)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class TrainPaths(Settings):
    """Where :func:`stmil.mil.train.train` reads and writes (``stmil train``'s other flags)."""

    data: Path = setting(help="dataset root (UCF-Crime, UCF-Crime2Local or folder)")
    features: Path = setting(help="folder of extracted features")
    out: Path = setting(help="run folder to write")
    resume: bool = setting(False, "continue from the last checkpoint")


# Keys of a --config file besides the fields: the paths of a run.
PATH_KEYS = ("data", "features", "out")
# Facts about the features that a run's config.yaml records; read back, they are dropped.
RECORDED_KEYS = ("grid", "feature_grid", "in_dim", "endpoint", "size", "clip_len", "stride", "tail",
                 "precision", "resample_fps", "motion_scale")


def run_config_keys(raw: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The keys of a train ``--config`` mapping that are settings: a run's own ``config.yaml``
    is a valid ``--config``, so the feature facts it records are dropped, and the ``grid`` of
    a config older than ``instances`` is translated."""
    out = {k: v for k, v in raw.items() if k not in RECORDED_KEYS}
    if "grid" in raw and "instances" not in raw:
        out["instances"] = _legacy_grid(raw, path)
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """The settings a flat YAML ``--config`` file of ``stmil train`` gives, each checked (keys
    ``memory-size`` or ``memory_size``, never both); unknown keys are refused.

    Keys are :class:`TrainConfig` and :class:`TrainPaths` fields. A run's own ``config.yaml``
    is accepted (:func:`run_config_keys`). Because YAML 1.1 reads ``1e-3`` as a string, a
    string that spells a finite number is accepted for a float setting.
    """
    raw = run_config_keys(read_yaml_mapping(path, "train settings"), path)
    values = collect((TrainConfig, TrainPaths), {}, raw, path, "stmil train")
    return {name: values.values[name] for name in values.origins}


def _legacy_grid(cfg: dict, path: str | Path) -> str:
    """``instances`` of a run config.yaml written before ``grid`` was renamed to it."""
    grid, feature_grid = cfg["grid"], cfg.get("feature_grid")
    if feature_grid is not None and grid in (1, feature_grid):
        return "frame" if grid == 1 else "cuboid"
    raise ConfigError(f"{path}: grid was renamed: use instances: frame (was grid: 1, the "
                      "video-segment baseline) or instances: cuboid (the default)")
