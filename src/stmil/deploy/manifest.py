"""``manifest.json`` of an export folder: the one reader and writer.

It tells a runtime everything it needs besides the graphs: how to cut and preprocess clips,
what each graph takes and gives, where the weights came from and, for an export of a run, the
run's whole recorded config. An example (``stmil export-model --out exported --model RUN``)::

    {"format": "stmil-exported-model", "version": 1, "stmil_version": "0.1.0", "opset": 17,
     "precision": "fp32",
     "clips": {"clip_len": 16, "stride": 16, "fps": null, "tail": "drop"},
     "preprocess": {"size": 224, "layout": "batch, RGB, time, height, width",
                    "resize": "bilinear-antialias", "crop": null, "mean": 127.5,
                    "scale": 0.00784313725490196, "clamp": [-1.0, 1.0]},
     "features": {"file": "features.onnx", "bytes": 22927808, "sha256": "...",
                  "endpoint": "Mixed_4e", "grid": 7, "channels": 528,
                  "inputs": {"clips": ["batch", 3, 16, 224, 224]},
                  "outputs": {"features": ["batch", 49, 528], "motion": ["batch", 49]},
                  "motion_rule": "mean-abs-frame-difference", "motion_decimals": 6,
                  "weights": {"name": "i3d-kinetics400-rgb", "sha256": "af5c50f0..."}},
     "scorer": {"file": "scorer.onnx", "bytes": ..., "sha256": "...",
                "inputs": {"features": ["batch", 49, 528], "motion": ["batch", 49]},
                "outputs": {"maps": ["batch", 49]},
                "run": "/abs/path/of/RUN", "model_sha256": "...", "config": {...}}}

``scorer`` is null for an export without ``--model``. ``graph_format`` (absent in the first
exports: ``onnx``) says what the graph files are: ``onnx`` (``features.onnx``, run by ONNX
Runtime) or ``openvino`` (OpenVINO IR: ``features.xml`` with its weights ``features.bin``,
recorded as the entry's ``bin``: file, bytes and SHA-256, verified like the graph).

Pixels become model input as
``(pixel - mean) * scale`` clamped to ``clamp``, after the whole frame (no crop) is resized to
``size`` x ``size``. All tensors are float32. ``motion`` (features output, scorer input) is
rounded to ``motion_decimals`` decimals between the two, as ``stmil extract`` stores it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stmil import safejson
from stmil.errors import ConfigError, ModelError
from stmil.ownership import sha256_of
from stmil.settings import MISSING, Settings, setting

MANIFEST = "manifest.json"
FEATURES_FILE = "features.onnx"
SCORER_FILE = "scorer.onnx"
#: The runtime (``--backend``) of each ``graph_format`` (``export-model --format``).
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}
FORMAT = "stmil-exported-model"
VERSION = 1
#: Pixel values 0..255 -> model input, as :mod:`stmil.features.resize` computes it.
MEAN, SCALE = 127.5, 2.0 / 255.0
AGAIN = "export it again with stmil export-model"


@dataclass(frozen=True)
class ExportManifest:
    """A validated ``manifest.json``; ``folder`` is where it was read from (or is to go)."""

    folder: Path
    data: Mapping[str, Any]

    @property
    def clips(self) -> Mapping[str, Any]:
        return self.data["clips"]

    @property
    def features(self) -> Mapping[str, Any]:
        return self.data["features"]

    @property
    def scorer(self) -> Mapping[str, Any] | None:
        return self.data["scorer"]

    @property
    def graph_format(self) -> str:
        """``onnx`` or ``openvino`` (:data:`RUNTIMES`)."""
        return self.data.get("graph_format", "onnx")

    @property
    def size(self) -> int:
        return int(self.data["preprocess"]["size"])

    def path(self, entry: Mapping[str, Any]) -> Path:
        """The graph file of ``entry`` (``features`` or ``scorer``)."""
        return self.folder / entry["file"]

    def text(self) -> str:
        return json.dumps(dict(self.data), indent=1, allow_nan=False) + "\n"


def preprocess(size: int) -> dict[str, Any]:
    """The manifest's ``preprocess`` block for input ``size`` (the one resize definition)."""
    from stmil.features.resize import RESIZE  # deferred: torch, for the name alone

    return {"size": size, "layout": "batch, RGB, time, height, width", "resize": RESIZE,
            "crop": None, "mean": MEAN, "scale": SCALE, "clamp": [-1.0, 1.0]}


def graph_entry(path: Path, inputs: dict[str, list], outputs: dict[str, list],
                **extra: Any) -> dict[str, Any]:
    """A graph's manifest entry: its file name, byte size, SHA-256, inputs and outputs."""
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_of(path),
            "inputs": inputs, "outputs": outputs, **extra}


def _count(default: Any = MISSING) -> Any:
    return setting(default, lo=1, hi=math.inf)


@dataclass(frozen=True, kw_only=True)
class _Top(Settings):
    """A manifest's own keys (besides ``format``/``version`` and its blocks)."""

    stmil_version: str = setting()
    opset: int = _count()
    precision: str = setting()
    graph_format: str = setting("onnx", choices=tuple(RUNTIMES))


@dataclass(frozen=True, kw_only=True)
class _Clips(Settings):
    clip_len: int = _count()
    stride: int = _count()
    fps: float | None = setting(None, lo=0, lo_open=True, hi=math.inf)


@dataclass(frozen=True, kw_only=True)
class _Preprocess(Settings):
    size: int = _count()


@dataclass(frozen=True, kw_only=True)
class _Graph(Settings):
    """A graph's entry (:func:`graph_entry`)."""

    file: str = setting(pattern=r".+", what="a file name")
    bytes: int = setting(lo=0, hi=math.inf)
    sha256: str = setting()


@dataclass(frozen=True, kw_only=True)
class _FeatureGraph(_Graph):
    endpoint: str = setting()
    grid: int = _count()
    channels: int = _count()
    motion_decimals: int = setting(lo=0, hi=math.inf)


@dataclass(frozen=True, kw_only=True)
class _ScorerGraph(_Graph):
    model_sha256: str = setting()


#: Each block of a manifest, its record, and the blocks inside it that must be mappings.
_BLOCKS: tuple[tuple[str, type, tuple[str, ...]], ...] = (
    ("", _Top, ("clips", "preprocess", "features")), ("clips", _Clips, ()),
    ("preprocess", _Preprocess, ()), ("features", _FeatureGraph, ("inputs", "outputs")),
    ("scorer", _ScorerGraph, ("inputs", "outputs", "config")))


def read_manifest(folder: Path | str, verify: bool = True) -> ExportManifest:
    """The manifest of an export folder, checked; with ``verify`` each graph file's size and
    SHA-256 must match it (a file changed or half-written since is refused).

    :class:`ModelError` naming the file and the first problem.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelError(f"{folder}: no {MANIFEST} (is this a folder stmil export-model "
                         "wrote?)")
    try:
        data = safejson.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{path}: not a stmil export manifest ({e}); {AGAIN}") from None
    problem = _problem(data)
    if problem:
        raise ModelError(f"{path}: not a stmil export manifest ({problem}); {AGAIN}")
    for key, record, _ in _BLOCKS:
        block = data[key] if key else data
        if block is not None:  # a null scorer: an export without --model
            record.from_mapping(block, f"{path}: {key}" if key else path, fix=AGAIN,
                                error=ModelError, others="ignore")
    manifest = ExportManifest(folder, data)
    if verify:
        for entry in (manifest.features, manifest.scorer):
            if entry is not None:
                _verify(manifest.path(entry), entry)
    return manifest


def _problem(data: Any) -> str | None:
    """What makes ``data`` no manifest of this version, or None: its format, version and the
    shape of its blocks (their values are their records', :data:`_BLOCKS`)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"format is not {FORMAT!r}"
    if data.get("version") != VERSION:
        return f"version {data.get('version')!r}; this stmil reads version {VERSION}"
    if "scorer" not in data:
        return "no scorer entry (null for an export without --model)"
    for key, _, inner in _BLOCKS:
        block = data.get(key) if key else data
        if key == "scorer" and block is None:
            continue
        if not isinstance(block, dict):
            return f"{key} is not a mapping"
        for name in inner:
            if not isinstance(block.get(name), dict):
                return f"{key + '.' if key else ''}{name} is not a mapping"
    return None


def _verify(path: Path, entry: Mapping[str, Any]) -> None:
    """:class:`ModelError` unless ``path`` has the size and SHA-256 its entry records."""
    if "bin" in entry:  # OpenVINO IR: the weights beside the graph
        if not isinstance(entry["bin"], dict) or not isinstance(entry["bin"].get("file"), str):
            raise ModelError(f"{path.parent / MANIFEST}: bin of {entry['file']} is not a file "
                             f"entry; {AGAIN}")
        _verify(path.parent / str(entry["bin"]["file"]), entry["bin"])
    if Path(entry["file"]).name != entry["file"]:
        raise ModelError(f"{path}: the manifest names a file outside its folder; {AGAIN}")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelError(f"{path}: missing (the manifest names it); {AGAIN}") from None
    if size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
        raise ModelError(f"{path}: not the file the manifest records (changed, or an export "
                         f"was interrupted); {AGAIN}")


def check_export(manifest: ExportManifest, endpoint: str, grid: int, size: int,
                 clip_len: int) -> None:
    """:class:`ConfigError` naming the export unless its feature graph computes ``endpoint``
    features on a ``grid`` x ``grid`` grid of clips of ``clip_len`` frames of ``size``
    pixels."""
    f = manifest.features
    have = (f["endpoint"], f["grid"], manifest.size, manifest.clips["clip_len"])
    want = (endpoint, grid, size, clip_len)
    if have != want:
        what = "endpoint {}, grid {}, size {}, clip_len {}"
        raise ConfigError(f"{manifest.folder}: its feature graph computes {what.format(*have)}"
                          f", not the {what.format(*want)} asked for; export one with stmil "
                          "export-model (or drop --exported: stmil exports one into its cache)")
