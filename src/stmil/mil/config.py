"""``TrainConfig``: every training hyperparameter, typed and validated in one place.

The CLI's ``train`` flags and the keys of a ``--config`` YAML file are generated from its fields,
and a run's ``config.yaml`` is a valid ``--config``. Values are checked strictly: a YAML
``skip_missing: "false"`` is refused rather than read as true, ``hidden: 0`` or ``lr: nan`` are
refused with the rule they break.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stmil.datasets import FORMATS as DATASET_FORMATS
from stmil.device import DEVICES
from stmil.errors import ConfigError

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
FLOAT32_MAX = 3.4028234663852886e38


def _f(default: Any, help: str, *, lo: float | None = None, lo_open: bool = False,
       hi: float | None = None, hi_open: bool = False, choices: tuple[str, ...] | None = None,
       none: bool = False) -> Any:
    """A dataclass field with its help text and the range or choices it must respect."""
    rule = dict(help=help, lo=lo, lo_open=lo_open, hi=hi, hi_open=hi_open, choices=choices,
                none=none)
    return field(default=default, metadata=rule)


@dataclass(frozen=True)
class TrainConfig:
    """The hyperparameters of :func:`stmil.mil.train.train` (paths and I/O options excluded)."""

    format: str = _f("auto", "dataset layout; auto: detected from the files", choices=FORMATS)
    instances: str = _f("cuboid", "what a bag's instances are: cuboid (the method: each "
                        "segment's G x G cuboids) or frame (the video-segment baseline of "
                        "Sultani et al.: one whole-frame instance per segment)",
                        choices=INSTANCES)
    supervision: str = _f("weak", "boxes: the boxes-supervised reference (upper bound)",
                          choices=SUPERVISION)
    n_segments: int = _f(32, "temporal segments per bag", lo=1)
    batch_anomalous: int = _f(30, "anomalous bags per batch", lo=1)
    batch_normal: int = _f(30, "normal bags per batch", lo=1)
    iterations: int = _f(3000, "training iterations (a resumed run continues to this total)",
                         lo=1)
    lr: float = _f(0.01, "Adagrad learning rate", lo=0, lo_open=True)
    weight_decay: float = _f(1e-3, "L2 weight decay", lo=0)
    lambda1: float = _f(8e-5, "weight of the temporal smoothness term", lo=0)
    lambda2: float = _f(8e-5, "weight of the sparsity term", lo=0)
    method: str = _f("auto", "weak loss: topk (hinge on the mean of the top-k instances, and "
                     "every instance of every normal bag a negative), paper (Sultani's MIL "
                     "ranking loss on each bag's max instance, exactly as the paper; ungated "
                     "unless --gate memory), or auto (the default): topk for weak cuboid "
                     "instances on grid > 1 features, paper for frame instances and grid-1 "
                     "features (Sultani's video-segment setting) and for boxes supervision",
                     choices=METHODS)
    topk: int = _f(3, "method topk: instances averaged per anomalous bag", lo=1)
    neg_weight: float = _f(1.0, "method topk: weight of the normal-instances BCE term", lo=0)
    lambda_tv: float = _f(0.0, "weight of the total variation of anomalous score maps over "
                          "4-neighbour cuboids and adjacent segments (0: off)", lo=0)
    self_train: int = _f(0, "rounds of pseudo-label self-training after the MIL stage (0: "
                         "off): the top cuboids of the top segments of each anomalous training "
                         "video become positives, every cuboid of the normal training videos "
                         "negatives, and the scorer is retrained with class-balanced BCE; a "
                         "round is kept only if the validation AUC does not drop (needs "
                         "val_fraction > 0)", lo=0)
    self_train_segments: int = _f(2, "self-training: top-scoring segments (distinct clip spans) "
                                  "per anomalous training video", lo=1)
    self_train_cuboids: int = _f(3, "self-training: top-scoring cuboids per such segment", lo=1)
    self_train_iterations: int = _f(50, "self-training: iterations per round", lo=1)
    self_train_init: str = _f("continue", "self-training: each round continues from the current "
                              "model, or trains a fresh scorer", choices=SELF_TRAIN_INITS)
    gate: str = _f("auto", "auto (the default): memory for method topk with weak supervision "
                   "and cuboid instances on grid > 1 features (with 2 or more normal training "
                   "videos), none otherwise; none: the "
                   "scorer's scores as they are; memory: after training, keep a bank of the "
                   "normal training videos' instances and multiply each test score by the "
                   "instance's novelty against it, rescaled so that the median normal instance "
                   "gets 0 (what normal videos showed, anywhere in the frame, scores 0; "
                   "docs/method.md)", choices=GATES)
    motion: str = _f("auto", "auto (the default): gate for method topk with weak supervision "
                     "and cuboid instances on grid > 1 features that carry motion energy "
                     "(extracted by this stmil), none otherwise; none: no motion prior; gate: "
                     "multiply each test score by min(1, m / q), m the cuboid's motion energy "
                     "in the clip and q the 90th percentile of the normal training videos' "
                     "(a static cuboid scores 0; docs/method.md)", choices=MOTIONS)
    memory_size: int = _f(16384, "gate memory: at most this many bank entries (a seeded sample "
                          "of the normal training instances; 4 bytes x feature size each in the "
                          "model file; scoring time grows with it: docs/method.md)", lo=1)
    hidden: int = _f(512, "units of the scorer's first layer", lo=1)
    mid: int = _f(32, "units of the scorer's second layer", lo=1)
    dropout: float = _f(0.6, "dropout probability, shared per bag", lo=0, hi=1, hi_open=True)
    overlap: float = _f(0.25, "boxes supervision: a cuboid is positive when a box covers this "
                        "fraction of it", lo=0, lo_open=True, hi=1)
    seed: int = _f(0, "random seed (training is deterministic for a seed)", lo=0, hi=2**32 - 1)
    val_fraction: float = _f(0.0, "fraction of train held out for validation and model "
                             "selection", lo=0, hi=1, hi_open=True)
    val_every: int = _f(100, "iterations between validation checks", lo=1)
    patience: int = _f(0, "stop after this many checks without validation gain (0: never)",
                       lo=0)
    checkpoint_every: int = _f(200, "iterations between checkpoints (for --resume)", lo=1)
    skip_missing: bool = _f(False, "leave out listed videos that have no features (logged)")
    device: str = _f("auto", "torch device", choices=DEVICES)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = check_setting(f.name, getattr(self, f.name))
            if field_type(f.name) is float and isinstance(value, int):
                # a float setting given as a YAML int: a float, as torch needs (an int beyond
                # int64, e.g. 99999999999999999999, overflows in the loss)
                object.__setattr__(self, f.name, float(value))
        if self.self_train and self.val_fraction == 0:
            raise ConfigError("self_train needs a validation split to keep or undo its rounds: "
                              "set val_fraction > 0 (e.g. 0.25)")
        if self.self_train and self.supervision == "boxes":
            raise ConfigError("self_train applies to weak supervision; set self_train 0 for "
                              "supervision boxes")

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
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown settings {', '.join(unknown)}; "
                              f"allowed: {', '.join(FIELDS)}")
        try:
            return cls(**values)
        except ConfigError as e:
            if where is None:
                raise
            raise ConfigError(f"{where}: {e}") from None


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_type(name: str) -> type:
    """The field's value type: ``int``, ``float``, ``str`` or ``bool``."""
    return type(FIELDS[name].default)


def check_setting(name: str, value: Any) -> Any:
    """Return ``value`` if it is a valid ``name`` setting, else raise :class:`ConfigError`.

    Types are strict: a bool is not an int, a string is not a bool, an int is accepted where a
    float is expected. Floats must be finite.
    """
    rule = FIELDS[name].metadata
    typ = field_type(name)
    if value is None and rule["none"]:
        return value
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[typ](value)
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[typ]
    if not ok:
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    if typ is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if typ is float and abs(value) > FLOAT32_MAX:
        raise ConfigError(f"{name} must be within float32 range (|x| <= 3.4e+38), "
                          f"got {value!r}")
    if rule["choices"] is not None and value not in rule["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(rule['choices'])}, got {value!r}")
    lo, hi = rule["lo"], rule["hi"]
    if (lo is not None and (value < lo or (rule["lo_open"] and value == lo))) or \
            (hi is not None and (value > hi or (rule["hi_open"] and value == hi))):
        raise ConfigError(f"{name} must be {_range(rule)}, got {value!r}")
    return value


def _range(rule: dict) -> str:
    """``rule``'s range in words, e.g. ``>= 0 and < 1``."""
    parts = []
    if rule["lo"] is not None:
        parts.append(f"{'>' if rule['lo_open'] else '>='} {rule['lo']}")
    if rule["hi"] is not None:
        parts.append(f"{'<' if rule['hi_open'] else '<='} {rule['hi']}")
    return " and ".join(parts)


# Keys of a --config file besides the fields: the paths of a run.
PATH_KEYS = ("data", "features", "out")
# Facts about the features that a run's config.yaml records; read back, they are dropped.
RECORDED_KEYS = ("grid", "feature_grid", "in_dim", "endpoint", "size", "clip_len", "stride", "tail",
                 "precision", "resample_fps", "motion_scale")


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping with string keys that a YAML ``--config`` file holds (``{}`` when it is
    empty); ``what`` names its settings in the errors (``"train settings"``). Its values are
    the caller's to check."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text YAML file (byte {e.start}); "
                          f"pass a YAML config of {what}") from e
    if "\x00" in text:
        raise ConfigError(f"{path}: a binary file, not a YAML config of {what}")
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if cfg is None:
        return {}
    if not isinstance(cfg, dict) or not all(isinstance(k, str) for k in cfg):
        raise ConfigError(f"{path}: a config is a flat mapping of {what}")
    return cfg


def read_config(path: str | Path) -> dict[str, Any]:
    """The settings of a flat YAML ``--config`` file, each checked; unknown keys are refused.

    Keys are :class:`TrainConfig` fields and ``data``, ``features``, ``out`` (strings). A
    run's own ``config.yaml`` is accepted: the feature facts it records are dropped. Because
    YAML 1.1 reads ``1e-3`` as a string, a string that spells a finite number is accepted for
    a float setting; nothing else is converted.
    """
    raw = read_yaml_mapping(path, "train settings")
    cfg: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in raw.items():  # memory-size or memory_size, as every command takes
        name = str(key).replace("-", "_")
        if name in cfg:
            raise ConfigError(f"{path}: {spelled[name]!r} and {key!r} are one setting given "
                              "twice; keep one")
        cfg[name], spelled[name] = value, str(key)
    allowed = [*FIELDS, *PATH_KEYS]
    unknown = sorted(set(cfg) - set(allowed) - set(RECORDED_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown config keys {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}")
    out: dict[str, Any] = {}
    if "grid" in cfg and "instances" not in cfg:
        out["instances"] = _legacy_grid(cfg, path)
    for key, value in cfg.items():
        if key in RECORDED_KEYS:
            continue
        if key in PATH_KEYS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{path}: {key} must be a path (a non-empty string), "
                                  f"got {value!r}")
        else:
            if field_type(key) is float and isinstance(value, str):
                value = _float_string(value, key, path)
            try:
                check_setting(key, value)
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None
        out[key] = value
    return out


def _legacy_grid(cfg: dict, path: str | Path) -> str:
    """``instances`` of a run config.yaml written before ``grid`` was renamed to it."""
    grid, feature_grid = cfg["grid"], cfg.get("feature_grid")
    if feature_grid is not None and grid in (1, feature_grid):
        return "frame" if grid == 1 else "cuboid"
    raise ConfigError(f"{path}: grid was renamed: use instances: frame (was grid: 1, the "
                      "video-segment baseline) or instances: cuboid (the default)")


def _float_string(value: str, key: str, path: str | Path) -> float:
    """``"1e-3"`` -> ``0.001`` (YAML 1.1 leaves exponents without a dot as strings)."""
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{path}: {key} must be a number, got {value!r}") from None
