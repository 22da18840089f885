"""The training loop: bags from features, MIL (or boxes) loss, checkpoints, the run folder.

A run folder (see :mod:`stmil.mil.run`) holds ``model.safetensors``, ``config.yaml`` (every setting,
resolved), ``history.csv`` and the marker ``.stmil-run``. Training happens in a hidden staging
folder beside it, ``.<name>.stmil-staging/``, which holds the checkpoint (for ``--resume``) and
the bag cache, and is committed over the run in one atomic step when training ends: a training
that fails or is killed leaves the previous run untouched.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from stmil import __version__
from stmil.atomic import atomic_write, naming, remove_stale_temps, write_text
from stmil.cuboids import cuboid_boxes
from stmil.datasets import load_dataset
from stmil.device import resolve_device
from stmil.errors import ConfigError, ModelError, OutputError
from stmil.features.motion import motion_scale
from stmil.features.store import VideoFeatures, load_dataset_features
from stmil.mil.bags import BagStore, make_bag, segment_cuboid_labels
from stmil.mil.config import (
    FIELDS,
    RECORDED_KEYS,
    SUPERVISION,
    TrainConfig,
    read_config,
)
from stmil.mil.memory import MemoryGate, build_memory
from stmil.mil.model import Scorer, boxes_bce_loss, flush_denormals, weak_loss
from stmil.mil.run import (
    CHECKPOINT_JSON,
    MARKER,
    MODEL,
    check_run_output,
    commit_folder,
    foreign_entries,
    lock_folder,
    read_checkpoint,
    restore_checkpoint,
    resume_mismatch,
    save_checkpoint,
    save_model,
    staging_path,
)
from stmil.mil.selftrain import self_train
from stmil.ownership import record_folder
from stmil.timeline import segment_clip_ranges

__all__ = ["RECORDED_KEYS", "SUPERVISION", "TRAIN_ARGS", "TRAIN_DEFAULTS", "TrainConfig",
           "read_config", "train"]

log = logging.getLogger(__name__)

TRAIN_ARGS = tuple(FIELDS)
TRAIN_DEFAULTS = TrainConfig().to_dict()


def train(
    data: str | Path,
    features: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    command: str = "train",
    **settings: Any,
) -> dict:
    """Train a cuboid scorer on the ``train`` split of ``data`` into the run folder ``out``.

    Settings are a :class:`TrainConfig` and/or its fields as keywords (``iterations=...``,
    ``instances="frame"``...), keywords overriding ``config``. ``instances="cuboid"`` makes
    each segment's G x G cuboids the instances (the method); ``"frame"`` is the video-segment
    baseline (one whole-frame instance per segment). The older keyword ``grid`` is still
    accepted: ``grid=1`` is ``instances="frame"``, ``None`` or the features' grid ``"cuboid"``.
    ``supervision="boxes"`` is the boxes-supervised reference (BCE on cuboids overlapping
    ground-truth boxes). With ``val_fraction > 0`` a stratified validation split is carved
    from train; the model with the best video-level validation AUC is kept and ``patience``
    checks without improvement stop training early (0: never). Deterministic for a ``seed``.

    ``out`` is written as a whole or not at all; an existing non-empty folder that is not a
    stmil run is refused. ``resume=True`` continues an interrupted training of ``out`` from its
    last checkpoint, refusing any change of data, features or settings other than
    ``iterations``, ``checkpoint_every`` and ``device``. ``command``: who the run's ledger
    says wrote it (``demo`` for the demo's runs). Returns a summary dict.
    """
    grid = settings.pop("grid", None)  # the older spelling: None or G = cuboid, 1 = frame
    if grid is not None and "instances" not in settings:
        settings["instances"] = "frame" if grid == 1 else "cuboid"
    cfg = TrainConfig.from_dict((config or TrainConfig()).to_dict() | settings)
    out = Path(out)
    stage = staging_path(out)
    check_run_output(out)
    records = load_dataset(data, "train", cfg.format)
    videos = load_dataset_features(records, features, cfg.skip_missing)
    cfg = _resolve_auto(cfg, videos)
    resolved, videos = _resolve(cfg, data, features, out, videos, grid)
    fingerprint = _fingerprint(resolved, data, features, videos)
    with naming(out, stage):  # a full or read-only disk names the run, not its staging folder
        if stage.is_dir():  # refuse a concurrent training before touching its staging folder
            _unlock(lock_folder(stage, out))
        checkpoint = _open_staging(stage, out, resume, cfg, fingerprint)
        top = _first_missing(stage)
        stage.mkdir(parents=True, exist_ok=True)
        lock = lock_folder(stage, out)
        try:
            summary = _train_in(stage, cfg, resolved, fingerprint, videos, checkpoint, progress)
            _finish(stage)
            record_folder(stage, command)  # the run's ledger, committed with it in one step
            commit_folder(stage, out)
        except BaseException:
            _abandon(stage, top)
            raise
        finally:
            _unlock(lock)
    return summary


def _resolve_auto(cfg: TrainConfig, videos: list[VideoFeatures]) -> TrainConfig:
    """``cfg`` with method, gate and motion ``auto`` resolved (:meth:`TrainConfig.resolved`)
    for these training videos; says so when the default detector must go without its gate
    (too few normal videos) or its motion prior (features without motion energy)."""
    lacking = next((v for v in videos if v.motion is None), None)
    if cfg.motion == "gate" and lacking is not None:
        raise ConfigError(f"{lacking.record.video_id}: its features carry no motion energy, "
                          "which --motion gate needs (extracted by an older stmil, or "
                          "imported); re-extract them with stmil extract --overwrite, or "
                          "train with --motion none")
    if "auto" not in (cfg.method, cfg.gate, cfg.motion):
        return cfg
    labels = np.array([v.record.label for v in videos])  # (boxes supervision: always none)
    val = _carve_validation(labels, cfg.val_fraction, np.random.default_rng(cfg.seed))
    normal = int((~val & (labels == 0)).sum())
    grid = 1 if cfg.instances == "frame" else videos[0].meta.grid
    out = cfg.resolved(grid, normal, motion=lacking is None)
    if cfg.gate == "auto" and out.gate == "none" and cfg.resolved(grid, 2).gate == "memory":
        log.warning(f"the memory gate needs 2 or more normal training videos (validation ones "
                    f"left out), this split has {normal}: training without it (gate none)")
    if cfg.motion == "auto" and out.motion == "none" and cfg.resolved(grid, 2).motion == "gate":
        log.warning(f"{lacking.record.video_id}: features without motion energy (an older "
                    "stmil, or imported): training without the motion gate (motion none); "
                    "re-extract them with stmil extract --overwrite to use it")
    return out


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _resolve(cfg: TrainConfig, data: str | Path, features: str | Path, out: Path,
             videos: list[VideoFeatures], grid: int | None = None
             ) -> tuple[dict, list[VideoFeatures]]:
    """The run's config (settings, paths, feature facts) and the videos it trains on.

    ``grid`` is what the older ``grid=`` keyword asked for: 1 or the features' grid.
    """
    meta = videos[0].meta
    feat_grid = meta.grid
    if grid is not None and grid not in (1, feat_grid):
        raise ConfigError(f"grid must be 1 or the features' grid {feat_grid}, got {grid} "
                          "(grid is now instances: frame or cuboid)")
    grid = 1 if cfg.instances == "frame" else feat_grid
    if cfg.supervision == "boxes":
        if grid == 1:
            raise ConfigError("the boxes-supervised reference needs cuboid instances, not "
                              "frame instances (grid 1)")
        videos = [v for v in videos if v.record.label == 0 or v.record.has_boxes]
    config = cfg.to_dict() | dict(
        data=str(data), features=str(features), out=str(out), grid=grid, feature_grid=feat_grid,
        in_dim=meta.channels, endpoint=meta.endpoint, size=meta.size, clip_len=meta.clip_len,
        stride=meta.stride, tail=meta.tail,
        precision=meta.precision or "fp32",  # None: imported, or from before bf16
        resample_fps=meta.resample_fps)
    return config, videos


def _fingerprint(config: dict, data: str | Path, features: str | Path,
                 videos: list[VideoFeatures]) -> dict:
    """What a checkpoint records to refuse a resume on other data, features or settings."""
    h = hashlib.sha256()
    for v in videos:
        st = (Path(features) / f"{v.record.video_id}.npy").stat()
        h.update(f"{v.record.video_id}\t{v.record.label}\t{st.st_size}\t{st.st_mtime_ns}\n"
                 .encode())
    return {k: v for k, v in config.items() if k != "out"} | {
        "data": str(Path(data).resolve()), "features": str(Path(features).resolve()),
        "inputs": h.hexdigest()}


def _open_staging(stage: Path, out: Path, resume: bool, cfg: TrainConfig,
                  fingerprint: dict) -> tuple[dict, dict] | None:
    """Prepare the staging folder; with ``resume``, return its checkpoint (sidecar, tensors)."""
    fix = f"delete {stage} or train without --resume"
    interrupted = stage.is_dir()  # a training was killed here, with or without a checkpoint
    if stage.exists():
        foreign = foreign_entries(stage) if stage.is_dir() else [stage.name]
        if foreign:
            raise OutputError(f"{stage}: holds {', '.join(foreign[:5])}, which stmil did not "
                              "write; move it away to train into " + str(out))
        has_ckpt = (stage / CHECKPOINT_JSON).is_file()
        if resume and has_ckpt:
            side, tensors = read_checkpoint(stage, fix)
            mismatch = resume_mismatch(side["config"], fingerprint)
            if mismatch:
                raise ConfigError(f"{out}: cannot resume with other settings ({mismatch}); "
                                  "rerun with the recorded settings, or train without --resume "
                                  "to start over")
            if side["iteration"] > cfg.iterations:
                raise ConfigError(f"{out}: the checkpoint is at iteration {side['iteration']}, "
                                  f"past iterations {cfg.iterations}; pass --iterations "
                                  f"{side['iteration']} or more")
            remove_stale_temps(stage)
            shutil.rmtree(stage / "cache", ignore_errors=True)
            return side, tensors
        if has_ckpt:
            log.info(f"discarding the interrupted training of {out} (pass --resume to continue it)")
        shutil.rmtree(stage)
    if resume:
        if (out / "checkpoint.pt").exists():
            raise ModelError(f"{out / 'checkpoint.pt'}: a checkpoint of an older stmil (pickle), "
                             "which is never loaded; train without --resume")
        if interrupted:
            raise ConfigError(f"{out}: the interrupted training stopped before its first "
                              f"checkpoint (one every {cfg.checkpoint_every} iterations), so "
                              "there is nothing to resume; train without --resume to start it "
                              "again")
        if (out / MODEL).is_file():
            raise ConfigError(f"{out}: finished, nothing to resume; train without --resume to "
                              "retrain it from scratch")
        raise ConfigError(f"{out}: no interrupted training to resume; train without --resume")
    return None


def _train_in(stage: Path, cfg: TrainConfig, config: dict, fingerprint: dict,
              videos: list[VideoFeatures], checkpoint: tuple[dict, dict] | None,
              progress: bool) -> dict:
    """Train in ``stage``, leaving there the run's outputs; returns the summary."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    labels = np.array([v.record.label for v in videos])
    val = _carve_validation(labels, cfg.val_fraction, rng)
    train_idx = np.flatnonzero(~val)
    anom, norm = train_idx[labels[train_idx] == 1], train_idx[labels[train_idx] == 0]
    # the motion gate's scale (stmil.features.motion), from the normal training videos
    config["motion_scale"] = motion_scale([videos[i].motion for i in norm]) \
        if cfg.motion == "gate" and len(norm) else None
    write_text(stage / MARKER, json.dumps({"stmil": __version__}))
    write_text(stage / "config.yaml", yaml.safe_dump(config))
    if len(anom) == 0 or len(norm) == 0:
        raise ConfigError(f"{config['data']}: training needs anomalous and normal videos, got "
                          f"{len(anom)} anomalous and {len(norm)} normal")
    if cfg.gate == "memory" and len(norm) < 2:  # before training, not after
        raise ConfigError(f"{config['data']}: gate memory needs at least 2 normal training "
                          f"videos (validation ones left out), got {len(norm)}; add normal "
                          "videos or train with gate none")
    log.info(f"train: {len(anom)} anomalous + {len(norm)} normal bags, {int(val.sum())} validation")
    if cfg.self_train and not val.any():
        raise ConfigError(f"{config['data']}: self_train needs a validation split, and its "
                          f"{len(labels)} training videos leave none at val_fraction "
                          f"{cfg.val_fraction:g} (3 or more per class needed); set self_train 0")
    frames = config["grid"] == 1  # frame instances: one whole-frame instance per clip
    bags = _build_bags(videos, cfg.n_segments, frames, stage / "cache" / "bags.npy",
                       progress)
    targets = (_box_targets(videos, cfg.n_segments, cfg.overlap)
               if cfg.supervision == "boxes" else None)

    dev = resolve_device(cfg.device)
    store = BagStore(bags, dev)  # held on the training device when it fits (else the memmap)
    in_dim = config["in_dim"]
    model = Scorer(in_dim, cfg.hidden, cfg.mid, cfg.dropout).to(dev)
    optim = torch.optim.Adagrad(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"iteration": 0, "history": [], "best_auc": -1.0, "best": None, "stale": 0}
    if checkpoint is not None:
        side, tensors = checkpoint
        try:
            state = restore_checkpoint(side, tensors, model, optim)
            rng.bit_generator.state = side["numpy_rng"]
        except (ValueError, RuntimeError, KeyError, TypeError) as e:
            raise ModelError(f"{stage / CHECKPOINT_JSON}: checkpoint does not fit this model "
                             f"({' '.join(str(e).split())[:160]}); delete {stage} or train "
                             "without --resume") from e
        log.info(f"resumed from iteration {state['iteration']}")

    start = time.perf_counter()
    bar = tqdm(total=cfg.iterations, initial=state["iteration"], disable=not progress,
               leave=False, unit="it")
    while state["iteration"] < cfg.iterations:
        model.train()
        a = rng.choice(anom, size=min(cfg.batch_anomalous, len(anom)), replace=False)
        n = rng.choice(norm, size=min(cfg.batch_normal, len(norm)), replace=False)
        idx = np.concatenate([a, n])
        scores = model(store.gather(idx))
        if targets is None:
            loss, parts = weak_loss(scores[: len(a)], scores[len(a):], cfg.method, cfg.topk,
                                    cfg.neg_weight, cfg.lambda1, cfg.lambda2, cfg.lambda_tv)
        else:
            loss = boxes_bce_loss(scores, torch.from_numpy(targets[idx]).to(dev))
            parts = {}
        if not torch.isfinite(loss):
            raise ConfigError(f"training diverged at iteration {state['iteration'] + 1} (loss "
                              f"{loss.item()}); lower --lr (now {cfg.lr:g})")
        optim.zero_grad()
        loss.backward()
        optim.step()
        flush_denormals(model)
        state["iteration"] += 1
        it = state["iteration"]
        row = {"iteration": it, "loss": loss.detach().item()}
        row |= {k: v.detach().item() for k, v in parts.items()}
        if val.any() and (it % cfg.val_every == 0 or it == cfg.iterations):
            row["val_auc"] = _video_auc(model, bags, labels, np.flatnonzero(val), dev)
            if row["val_auc"] > state["best_auc"]:
                state.update(best_auc=row["val_auc"], stale=0,
                             best={k: v.detach().clone() for k, v in model.state_dict().items()})
            else:
                state["stale"] += 1
        state["history"].append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if cfg.patience and state["stale"] >= cfg.patience:
            log.info(f"early stop at iteration {it}: no validation gain in {cfg.patience} checks")
            break
        if it % cfg.checkpoint_every == 0:
            _save_checkpoint(stage, model, optim, rng, state, fingerprint)
    bar.close()
    if state["best"] is not None:
        model.load_state_dict(state["best"])
    kept, final_loss = 0, state["history"][-1]["loss"] if state["history"] else None
    if cfg.self_train:
        model, rows = _self_train(model, cfg, config, videos, bags, store, labels, val, anom,
                                  norm, rng, state["iteration"])
        state["history"] += rows
        kept = sum(row.get("kept", 0) for row in rows)
        log.info(f"self-training: {kept} of {cfg.self_train} rounds kept")
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise ConfigError(f"training diverged: non-finite weights at iteration "
                          f"{state['iteration']}; lower --lr (now {cfg.lr:g})")
    if cfg.gate == "memory":
        model.gate = _memory_gate(videos, norm, frames, cfg).to(dev)
    _write_history(stage / "history.csv", state["history"])
    save_model(stage / MODEL, model, config)
    seconds = time.perf_counter() - start
    return {"iterations": state["iteration"], "seconds": seconds,
            "best_val_auc": state["best_auc"] if val.any() else None,
            "self_train_kept": kept,
            "final_loss": final_loss}


def _self_train(model: Scorer, cfg: TrainConfig, config: dict, videos: list[VideoFeatures],
                bags: np.ndarray, store: BagStore, labels: np.ndarray, val: np.ndarray,
                anom: np.ndarray, norm: np.ndarray, rng: np.random.Generator, iteration: int
                ) -> tuple[Scorer, list[dict]]:
    """:func:`stmil.mil.selftrain.self_train` on this training's bags and validation split."""
    dev = next(model.parameters()).device
    val_idx = np.flatnonzero(val)
    spans = [segment_clip_ranges(v.meta.n_clips, cfg.n_segments) for v in videos]
    return self_train(
        model, lambda: Scorer(config["in_dim"], cfg.hidden, cfg.mid, cfg.dropout).to(dev),
        store, bags, anom, norm, spans, lambda m: _video_auc(m, bags, labels, val_idx, dev),
        cfg, rng, iteration)


def _memory_gate(videos: list[VideoFeatures], norm: np.ndarray, grid1: bool,
                 cfg: TrainConfig) -> MemoryGate:
    """The normal-memory gate of the normal training videos (validation videos left out)."""
    instances = []  # (n_clips * N, C) views of the (n_clips, N, C) features, or clip means
    for i in norm:
        x = videos[i].features
        instances.append(np.asarray(x, np.float32).mean(axis=1) if grid1
                         else x.reshape(-1, x.shape[-1]))
    try:
        gate = build_memory(instances, cfg.memory_size, cfg.seed)
    except ValueError as e:
        raise ConfigError(f"gate memory: {e}") from None
    log.info(f"gate memory: {len(gate.bank)} normal instances of {len(norm)} videos, novelty "
             f"{gate.scale[0]:.4f} -> 0, {gate.scale[1]:.4f} -> 1")
    return gate


def _save_checkpoint(stage: Path, model: Scorer, optim: torch.optim.Optimizer,
                     rng: np.random.Generator, state: dict, fingerprint: dict) -> None:
    save_checkpoint(stage, model, optim, rng.bit_generator.state, state, fingerprint)


def _finish(stage: Path) -> None:
    """Remove the checkpoint and cache from a finished staging folder: it is now the run."""
    shutil.rmtree(stage / "cache", ignore_errors=True)
    for p in stage.glob("checkpoint-*.safetensors"):
        p.unlink()
    (stage / CHECKPOINT_JSON).unlink(missing_ok=True)
    remove_stale_temps(stage)


def _abandon(stage: Path, top: Path | None) -> None:
    """After a failure: keep a staging folder only for its checkpoint (``--resume``).

    Otherwise remove it, and the empty parent folders this training created (up to ``top``).
    """
    try:
        if not stage.is_dir():
            return
        ckpt = stage / CHECKPOINT_JSON
        if ckpt.is_file() and not (stage / MODEL).exists():
            shutil.rmtree(stage / "cache", ignore_errors=True)
            remove_stale_temps(stage)
            it = json.loads(ckpt.read_text()).get("iteration")
            log.info(f"training stopped; its checkpoint (iteration {it}) is kept in {stage} "
                     "for --resume")
            return
        shutil.rmtree(stage)
        if top is not None and top != stage:
            for p in stage.parents:
                p.rmdir()  # only if empty: OSError otherwise, which stops here
                if p == top:
                    break
    except (OSError, ValueError):
        pass  # the original error matters more; the next train tidies the staging folder


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
    """All bags in one memory-mapped float16 file: ``(n_videos, S, N, C)``.

    The file's blocks are allocated before it is mapped (:func:`allocate_npy`), so a full disk
    is an ``OSError`` naming it, not a bus error on a sparse file.
    """
    n = 1 if grid1 else videos[0].features.shape[1]
    shape = (len(videos), n_segments, n, videos[0].meta.channels)
    bags = allocate_npy(path, np.dtype(np.float16), shape)
    for i, v in enumerate(tqdm(videos, desc="bags", disable=not progress, leave=False)):
        bags[i] = make_bag(v.features, n_segments, grid1=grid1)
    bags.flush()
    del bags
    return np.load(path, mmap_mode="r")


def allocate_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` file of ``shape`` with every block allocated, mapped for writing.

    ``np.lib.format.open_memmap`` makes a sparse file: on a full disk, writing through the map
    then kills the process with SIGBUS. Here the blocks are reserved first
    (``posix_fallocate``, or written with zeros where that is missing), so a full disk is an
    ``OSError`` (ENOSPC) naming ``path``, and the partial file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(shape)}
    try:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_2_0(f, header)
            offset = f.tell()
            f.flush()
            _reserve(f.fileno(), offset, nbytes)
    except OSError as e:
        path.unlink(missing_ok=True)
        code = e.errno or errno.EIO
        raise OSError(code, f"{os.strerror(code)} (allocating the {nbytes / 2**20:.0f} MiB bag "
                      "cache; free space or train on a smaller dataset)", str(path)) from e
    return np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=shape)


def _reserve(fd: int, offset: int, nbytes: int) -> None:
    """Allocate ``nbytes`` after ``offset`` for real: ``posix_fallocate``, else write zeros."""
    if nbytes == 0:
        return
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, offset, nbytes)
        return
    chunk = bytes(1 << 20)
    os.lseek(fd, offset, os.SEEK_SET)
    left = nbytes
    while left:
        left -= os.write(fd, chunk[: min(left, len(chunk))])


def _box_targets(videos: list[VideoFeatures], n_segments: int, overlap: float) -> np.ndarray:
    """Per-bag cuboid targets ``(n_videos, S, N)``: zeros for normal videos."""
    n = videos[0].features.shape[1]
    grid = int(round(n ** 0.5))
    out = np.zeros((len(videos), n_segments, n), dtype=np.float32)
    for i, v in enumerate(videos):
        if v.record.label == 1:
            boxes = cuboid_boxes(v.meta.width, v.meta.height, grid)
            segs = segment_clip_ranges(v.meta.n_clips, n_segments)
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


def _write_history(path: Path, rows: list[dict]) -> None:
    fields = ["iteration", "loss", "hinge", "smoothness", "sparsity", "val_auc"]
    fields += [k for k in ("negatives", "tv") if rows and k in rows[0]]  # method topk, lambda_tv
    fields += ["round", "kept"] if any("round" in r for r in rows) else []  # self_train

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
