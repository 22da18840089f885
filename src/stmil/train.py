"""The training loop: bags from features, MIL (or boxes) loss, checkpoints, the run folder.

A run folder holds ``model.safetensors``, ``config.yaml`` (every argument of :func:`train`,
resolved), ``history.csv`` and, during training, ``checkpoint.pt`` for ``--resume``.
"""

from __future__ import annotations

import csv
import inspect
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from stmil.atomic import atomic_write
from stmil.bags import make_bag, segment_clip_ranges, segment_cuboid_labels
from stmil.cuboids import cuboid_boxes
from stmil.datasets import load_dataset
from stmil.device import resolve_device
from stmil.errors import ConfigError
from stmil.features import VideoFeatures, load_dataset_features
from stmil.mil import Scorer, boxes_bce_loss, mil_ranking_loss
from stmil.run import save_model

SUPERVISION = ("weak", "boxes")


def train(
    data: str | Path,
    features: str | Path,
    out: str | Path,
    *,
    format: str = "auto",
    grid: int | None = None,
    supervision: str = "weak",
    n_segments: int = 32,
    batch_anomalous: int = 30,
    batch_normal: int = 30,
    iterations: int = 3000,
    lr: float = 0.01,
    weight_decay: float = 1e-3,
    lambda1: float = 8e-5,
    lambda2: float = 8e-5,
    hidden: int = 512,
    mid: int = 32,
    dropout: float = 0.6,
    overlap: float = 0.25,
    seed: int = 0,
    val_fraction: float = 0.0,
    val_every: int = 100,
    patience: int = 0,
    checkpoint_every: int = 200,
    skip_missing: bool = False,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train a cuboid scorer on the ``train`` split of ``data``; returns a summary dict.

    ``grid=None`` uses the features' grid (the method); ``grid=1`` is the video-segment
    baseline (one whole-frame instance per segment). ``supervision="boxes"`` is the
    boxes-supervised reference (BCE on cuboids overlapping ground-truth boxes). With
    ``val_fraction > 0`` a stratified validation split is carved from train; the model with
    the best video-level validation AUC is kept and ``patience`` checks without improvement
    stop training early (0: never). Deterministic for a given ``seed``.
    """
    config = {k: v for k, v in locals().items() if k in TRAIN_ARGS}
    out = Path(out)
    for name in ("iterations", "val_every", "checkpoint_every", "n_segments",
                 "batch_anomalous", "batch_normal"):
        if config[name] < 1:
            raise ConfigError(f"{name} must be at least 1, got {config[name]}")
    if supervision not in SUPERVISION:
        raise ConfigError(f"supervision must be one of {SUPERVISION}, got {supervision!r}")
    records = load_dataset(data, "train", format)
    videos = load_dataset_features(records, features, skip_missing, log=log)
    feat_grid = videos[0].meta["grid"]
    grid = feat_grid if grid is None else grid
    if grid not in (1, feat_grid):
        raise ConfigError(f"grid must be 1 or the features' grid {feat_grid}, got {grid}")
    if supervision == "boxes":
        if grid == 1:
            raise ConfigError("the boxes-supervised reference needs the cuboid grid, not grid 1")
        videos = [v for v in videos if v.record.label == 0 or v.record.has_boxes]
    config.update(data=str(data), features=str(features), out=str(out), grid=grid,
                  feature_grid=feat_grid, in_dim=videos[0].meta["channels"])
    for key in ("endpoint", "size", "clip_len", "stride", "tail"):
        config[key] = videos[0].meta[key]
    m = videos[0].meta
    config["precision"] = m.get("precision", "fp32")
    config["resample_fps"] = m["fps"] if m["fps"] != m.get("source_fps", m["fps"]) else None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", lambda t: t.write_text(yaml.safe_dump(config)))

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    labels = np.array([v.record.label for v in videos])
    val = _carve_validation(labels, val_fraction, rng)
    train_idx = np.flatnonzero(~val)
    anom, norm = train_idx[labels[train_idx] == 1], train_idx[labels[train_idx] == 0]
    if len(anom) == 0 or len(norm) == 0:
        raise ConfigError(f"{data}: training needs anomalous and normal videos, got "
                         f"{len(anom)} anomalous and {len(norm)} normal")
    log(f"train: {len(anom)} anomalous + {len(norm)} normal bags, {int(val.sum())} validation")
    bags = _build_bags(videos, n_segments, grid == 1, out / "cache" / "bags.npy", progress)
    targets = _box_targets(videos, n_segments, overlap) if supervision == "boxes" else None

    dev = resolve_device(device)
    model = Scorer(config["in_dim"], hidden, mid, dropout).to(dev)
    optim = torch.optim.Adagrad(model.parameters(), lr=lr, weight_decay=weight_decay)
    state = {"iteration": 0, "history": [], "best_auc": -1.0, "best": None, "stale": 0}
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.is_file():
        state = _load_checkpoint(ckpt, model, optim, rng)
        log(f"resumed from iteration {state['iteration']}")

    start = time.perf_counter()
    bar = tqdm(total=iterations, initial=state["iteration"], disable=not progress, leave=False,
               unit="it")
    while state["iteration"] < iterations:
        model.train()
        a = rng.choice(anom, size=min(batch_anomalous, len(anom)), replace=False)
        n = rng.choice(norm, size=min(batch_normal, len(norm)), replace=False)
        idx = np.concatenate([a, n])
        scores = model(torch.from_numpy(bags[idx].astype(np.float32)).to(dev))
        if targets is None:
            loss, parts = mil_ranking_loss(scores[: len(a)], scores[len(a):], lambda1, lambda2)
        else:
            loss = boxes_bce_loss(scores, torch.from_numpy(targets[idx]).to(dev))
            parts = {}
        optim.zero_grad()
        loss.backward()
        optim.step()
        _flush_denormals(model)
        state["iteration"] += 1
        it = state["iteration"]
        row = {"iteration": it, "loss": loss.detach().item()}
        row |= {k: v.detach().item() for k, v in parts.items()}
        if val.any() and (it % val_every == 0 or it == iterations):
            row["val_auc"] = _video_auc(model, bags, labels, np.flatnonzero(val), dev)
            if row["val_auc"] > state["best_auc"]:
                state.update(best_auc=row["val_auc"], stale=0,
                             best={k: v.detach().clone() for k, v in model.state_dict().items()})
            else:
                state["stale"] += 1
        state["history"].append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if patience and state["stale"] >= patience:
            log(f"early stop at iteration {it}: no validation gain in {patience} checks")
            break
        if it % checkpoint_every == 0:
            _save_checkpoint(ckpt, model, optim, rng, state)
    bar.close()
    if state["best"] is not None:
        model.load_state_dict(state["best"])
    _write_history(out / "history.csv", state["history"])
    save_model(out / "model.safetensors", model, config)
    ckpt.unlink(missing_ok=True)
    (out / "cache" / "bags.npy").unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    return {"iterations": state["iteration"], "seconds": seconds,
            "best_val_auc": state["best_auc"] if val.any() else None,
            "final_loss": state["history"][-1]["loss"] if state["history"] else None}


TRAIN_ARGS = tuple(p for p in inspect.signature(train).parameters
                   if p not in ("data", "features", "out", "progress", "log", "resume"))
TRAIN_DEFAULTS = {p.name: p.default for p in inspect.signature(train).parameters.values()
                  if p.name in TRAIN_ARGS}


# Facts about the features that a run's config.yaml records; read back, they are dropped.
RECORDED_KEYS = ("feature_grid", "in_dim", "endpoint", "size", "clip_len", "stride", "tail",
                 "precision", "resample_fps")


def read_config(path: str | Path) -> dict:
    """A flat YAML config whose keys are :func:`train` arguments; unknown keys are refused.

    A run's own ``config.yaml`` is accepted: the feature facts it records are dropped.
    """
    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config is a flat mapping of train arguments")
    allowed = set(TRAIN_ARGS) | {"data", "features", "out"}
    unknown = sorted(set(cfg) - allowed - set(RECORDED_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown config keys {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    out = {k: v for k, v in cfg.items() if k in allowed}
    for k, v in out.items():  # coerce to the type of the default, refusing what cannot be
        default = TRAIN_DEFAULTS.get(k)
        if default is not None and v is not None and not isinstance(v, type(default)):
            try:
                out[k] = type(default)(v)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{path}: {k} must be {type(default).__name__}, got {v!r}") from e
    return out


def _carve_validation(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Stratified random validation mask, at least one video per class when fraction > 0."""
    val = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return val
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx)))) if len(idx) > 2 else 0
        val[rng.choice(idx, size=k, replace=False)] = True
    if len(np.unique(labels[val])) < 2:  # too few videos for a two-class validation split
        val[:] = False
    return val


def _build_bags(videos: list[VideoFeatures], n_segments: int, grid1: bool, path: Path,
                progress: bool) -> np.ndarray:
    """All bags in one memory-mapped float16 file: ``(n_videos, S, N, C)``."""
    n = 1 if grid1 else videos[0].features.shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    bags = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16,
                                     shape=(len(videos), n_segments, n, videos[0].meta["channels"]))
    for i, v in enumerate(tqdm(videos, desc="bags", disable=not progress, leave=False)):
        bags[i] = make_bag(v.features, n_segments, grid1=grid1)
    bags.flush()
    return np.load(path, mmap_mode="r")


def _box_targets(videos: list[VideoFeatures], n_segments: int, overlap: float) -> np.ndarray:
    """Per-bag cuboid targets ``(n_videos, S, N)``: zeros for normal videos."""
    n = videos[0].features.shape[1]
    grid = int(round(n ** 0.5))
    out = np.zeros((len(videos), n_segments, n), dtype=np.float32)
    for i, v in enumerate(videos):
        if v.record.label == 1:
            boxes = cuboid_boxes(v.meta["width"], v.meta["height"], grid)
            segs = segment_clip_ranges(v.meta["n_clips"], n_segments)
            out[i] = segment_cuboid_labels(segs, v.clip_ranges, boxes, v.record.boxes, overlap)
    return out


@torch.no_grad()
def _video_auc(model: Scorer, bags: np.ndarray, labels: np.ndarray, idx: np.ndarray,
               dev: torch.device) -> float:
    """Video-level ROC AUC: each bag's max instance score against its label."""
    model.eval()
    scores = [float(model(torch.from_numpy(bags[i].astype(np.float32)).to(dev)).max())
              for i in idx]
    return float(roc_auc_score(labels[idx], scores))


@torch.no_grad()
def _flush_denormals(model: Scorer) -> None:
    """Zero the weights that weight decay has shrunk below the smallest normal float.

    Adagrad's weight decay shrinks the weights of dead ReLU units geometrically into denormal
    floats, which make CPU matmuls up to 100x slower (measured with 2 threads; the per-thread
    ``torch.set_flush_denormal`` does not reach the intra-op worker threads).
    """
    for p in model.parameters():
        p.masked_fill_(p.abs() < torch.finfo(p.dtype).tiny, 0.0)


def _save_checkpoint(path: Path, model: Scorer, optim, rng: np.random.Generator,
                     state: dict) -> None:
    blob = {"model": model.state_dict(), "optim": optim.state_dict(),
            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "state": state}
    atomic_write(path, lambda t: torch.save(blob, t))


def _load_checkpoint(path: Path, model: Scorer, optim, rng: np.random.Generator) -> dict:
    blob = torch.load(path, weights_only=True)
    model.load_state_dict(blob["model"])
    optim.load_state_dict(blob["optim"])
    rng.bit_generator.state = blob["rng"]
    torch.set_rng_state(blob["torch_rng"])
    return blob["state"]


def _write_history(path: Path, rows: list[dict]) -> None:
    fields = ["iteration", "loss", "hinge", "smoothness", "sparsity", "val_auc"]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
