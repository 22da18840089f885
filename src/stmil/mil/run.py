"""The run folder contract: what ``stmil train --out RUN`` writes and how it is committed.

A finished run folder holds ``model.safetensors`` (weights, with the run's resolved config as
metadata), ``config.yaml``, ``history.csv``, the marker ``.stmil-run`` and, once evaluated,
metrics. :func:`save_model` is the one writer of the model and :func:`load_model` its one reader
(scoring, evaluation, overlays).

Training writes into a hidden staging folder beside the run, ``.<name>.stmil-staging/``
(checkpoints, the bag cache, then the outputs): :func:`staged_run` opens it (resuming from its
checkpoint, or starting afresh), and on success :func:`commit_folder` swaps it with the run in
one atomic step, so a run folder is always a whole run: the old one or the new one.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from stmil import safejson
from stmil.atomic import naming, remove_stale_temps, write_bytes, write_text
from stmil.errors import ConfigError, ModelError, OutputError
from stmil.features.pipeline_config import MAX_SIZE, ExtractSettings
from stmil.mil.config import FIELDS, PREDATING, RESUMABLE, SUPERVISION, TrainConfig
from stmil.mil.memory import MemoryGate
from stmil.mil.model import Scorer
from stmil.ownership import Ledger, files_of, record_folder
from stmil.settings import MISSING, Settings, require, setting, setting_like

if TYPE_CHECKING:
    from stmil.features.store import VideoFeatures

log = logging.getLogger(__name__)

MARKER = ".stmil-run"
MODEL = "model.safetensors"
CONFIG = "config.yaml"
CHECKPOINT_JSON = "checkpoint.json"

# What train (and evaluate, calibrate) write in a run folder; anything else is the user's and is
# never deleted: a folder holding it is refused as an output. (Retraining replaces the folder,
# so a calibration of the previous model goes with it.)
_OURS = re.compile(
    r"\.stmil-run|config\.yaml|history\.csv|model\.safetensors|checkpoint\.pt|checkpoint\.json"
    r"|checkpoint-\d+\.safetensors|metrics[\w.-]*\.json|metrics|cache|calibration\.json"
    r"|\..+\.tmp|\.stmil")


# --- the model file -----------------------------------------------------------------------------


def save_model(path: Path, model: Scorer, config: dict) -> None:
    """Scorer weights as safetensors, with the run's config as metadata (usual permissions)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = st_save(tensors, metadata={"stmil_config": json.dumps(config)})
    write_bytes(path, blob)


#: A run's gates once resolved (``auto`` is never recorded).
RUN_GATES = ("none", "memory")
RUN_MOTIONS = ("none", "gate")
MAX_CHANNELS = 1_000_000


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Settings):
    """The keys of a run's config that its model file records (``stmil_config``) and its
    readers (score, evaluate, export) rely on: their one declaration, checked by
    :func:`load_model`. The config's other keys (the run's ``config.yaml``) are kept as they
    are; runs older than the gates record neither (``none``)."""

    in_dim: int = setting(help="feature channels", lo=1, hi=MAX_CHANNELS)
    hidden: int = setting_like(TrainConfig, "hidden", MISSING)
    mid: int = setting_like(TrainConfig, "mid", MISSING)
    dropout: float = setting_like(TrainConfig, "dropout", MISSING)
    grid: int = setting(help="1: one whole-frame instance per clip (its score fills every "
                        "cell)", lo=1, hi=MAX_SIZE)
    feature_grid: int = setting(help="the grid of the features it reads", lo=1, hi=MAX_SIZE)
    endpoint: str = setting(help="I3D endpoint (or import:FORMAT)")
    size: int = setting_like(ExtractSettings, "size", MISSING)
    clip_len: int = setting_like(ExtractSettings, "clip_len", MISSING)
    stride: int = setting_like(ExtractSettings, "stride", MISSING)
    tail: str = setting_like(ExtractSettings, "tail", MISSING)
    supervision: str = setting(help="weak or boxes", choices=SUPERVISION)
    gate: str = setting("none", "memory: the scorer carries a memory gate", choices=RUN_GATES)
    motion: str = setting("none", "gate: scores are multiplied by the motion gate",
                          choices=RUN_MOTIONS)
    motion_scale: float | None = setting(None, "the motion gate's scale", lo=0, lo_open=True,
                                         hi=math.inf)

    def rules(self) -> None:
        require(self.motion != "gate" or self.motion_scale is not None,
                "{motion_scale} must be a number > 0 with motion gate, got None",
                "motion_scale")


def load_model(run: str | Path) -> tuple[Scorer, dict]:
    """The trained scorer of a run folder (eval mode) and the run's config.

    Refuses, with a :class:`ModelError` naming the file, a model file that is empty, truncated
    or not safetensors, metadata of the wrong shape or types, and non-finite weights.
    """
    path = Path(run) / MODEL
    if not path.is_file():
        raise ModelError(f"{run}: no {MODEL} (is this a run folder?)")
    fix = "retrain the run with stmil train"
    try:
        tensors, meta = _read_safetensors(path.read_bytes())
    except ValueError as e:
        raise ModelError(f"{path}: not a stmil model ({e}); {fix}") from e
    try:
        config = safejson.loads(meta.get("stmil_config", ""))
    except ValueError:
        raise ModelError(f"{path}: not a stmil model (no readable stmil_config metadata); "
                         f"{fix}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: bad metadata (stmil_config is {type(config).__name__}, not "
                         f"a mapping); {fix}")
    ModelConfig.from_mapping(config, path, fix=fix, error=ModelError, others="ignore")
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"{path}: NaN or Inf weights in {', '.join(bad)}; {fix}")
    in_dim = config["in_dim"]
    model = Scorer(in_dim, config["hidden"], config["mid"], config["dropout"])
    gated = config.get("gate", "none") == "memory"  # runs older than the gate have none
    if gated != ("gate.bank" in tensors and "gate.scale" in tensors):
        raise ModelError(f"{path}: the config says gate {config.get('gate', 'none')} but the "
                         f"file {'lacks' if gated else 'holds'} a memory bank; {fix}")
    if gated:
        bank, scale = tensors["gate.bank"], tensors["gate.scale"]
        if (bank.ndim != 2 or bank.shape[1] != in_dim or len(bank) == 0
                or scale.shape != (2,) or not scale[1] > scale[0]):
            raise ModelError(f"{path}: bad memory bank {tuple(bank.shape)} or scale "
                             f"{scale.tolist()} for features of {config['in_dim']}; {fix}")
        model.gate = MemoryGate(bank, scale)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not match the recorded sizes "
                         f"({' '.join(str(e).split())[:200]}); {fix}") from e
    return model.eval(), config


def read_run_config(run: str | Path) -> dict:
    """The ``config.yaml`` a run recorded (every resolved setting, paths included), as written
    by training; ``{}`` when it is absent or not a YAML mapping (a run of the user's)."""
    import yaml

    try:
        config = yaml.safe_load((Path(run) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _read_safetensors(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors blob; ``ValueError`` when it is not one."""
    if len(blob) < 8:
        raise ValueError(f"{len(blob)} bytes, truncated or empty")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError("truncated: header longer than the file")
    try:
        header = safejson.loads(blob[8:8 + n])
        tensors = st_load(blob)
    except (ValueError, SafetensorError) as e:
        raise ValueError(f"not safetensors: {' '.join(str(e).split())[:120]}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return tensors, meta if isinstance(meta, dict) else {}


# --- owning and committing a run folder ---------------------------------------------------------


def staging_path(out: Path) -> Path:
    """The hidden folder beside ``out`` where its next version is trained."""
    return out.parent / f".{out.name}.stmil-staging"


def _old_path(out: Path) -> Path:
    return out.parent / f".{out.name}.stmil-old"


def foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` (and its ``cache/``) that no stmil command writes."""
    names = sorted(e.name for e in os.scandir(folder) if not _OURS.fullmatch(e.name))
    cache = folder / "cache"
    if cache.is_dir():
        names += [f"cache/{e.name}" for e in os.scandir(cache)
                  if e.name != "bags.npy" and not re.fullmatch(r"\..+\.tmp", e.name)]
    elif cache.exists():
        names.append("cache")
    return names


def check_run_output(out: Path) -> None:
    """Refuse ``out`` unless it is absent, empty, or a stmil run folder holding nothing else.

    Also tidies what an interrupted commit left (see :func:`commit_folder`).
    """
    old = _old_path(out)
    if old.is_dir() and not foreign_entries(old):
        if not out.exists():
            os.rename(old, out)  # a commit without exchange support died between its renames
        else:
            shutil.rmtree(old)
    here, target = Path.cwd().resolve(), Path(os.path.abspath(out))
    if target == here or target in here.parents:
        raise OutputError(f"{out}: is the current folder or holds it; pass a run folder inside "
                          "it, for example runs/mil")
    if out.is_symlink():
        raise OutputError(f"{out}: is a symbolic link; pass the folder it points to as --out")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another --out")
    if not any(True for _ in os.scandir(out)):
        return
    ledger = Ledger.load(out)
    if not ledger.owns(MARKER, is_marker):
        raise OutputError(f"{out}: not empty and not a stmil run folder; choose another --out "
                          "(training replaces the whole folder)")
    legacy = _legacy_ours(out)
    foreign = [n for n in files_of(out) if not (
        ledger.owns(n, legacy) if not n.endswith("/")
        else ledger.legacy is None and n.split("/")[0] in ("cache", "metrics"))]
    if foreign:
        raise OutputError(f"{out}: holds {', '.join(foreign[:5])} (not written by stmil, or "
                          "changed since); move it out or choose another --out (training "
                          "replaces the whole folder)")


def is_marker(path: Path) -> bool:
    """Whether ``path`` holds what train writes to :data:`MARKER`: ``{"stmil": "<version>"}``
    and nothing else (a file of that name with other bytes is the user's)."""
    data = _json_object(path)
    return list(data) == ["stmil"] and isinstance(data["stmil"], str)


def _legacy_ours(out: Path) -> Callable[[Path], bool]:
    """Today's test for a run folder that predates ledgers (one with the marker): a name that
    train, evaluate or calibrate writes, and for calibration and metrics, their format."""
    def ours(path: Path) -> bool:
        rel = path.relative_to(out).as_posix()
        if "/" in rel:
            return rel == "cache/bags.npy" or rel.startswith("metrics/")
        if not _OURS.fullmatch(rel):
            return False
        if rel == MARKER:
            return is_marker(path)
        if rel == "calibration.json":
            return _json_object(path).get("format") == "stmil-calibration"
        if rel.startswith("metrics"):
            return bool({"results", "settings"} & set(_json_object(path)))
        return True
    return ours


def _json_object(path: Path) -> dict:
    """The JSON object in ``path``, or ``{}`` when it holds anything else."""
    try:
        data = safejson.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def commit_folder(staging: Path, out: Path) -> None:
    """Make ``staging`` the folder ``out`` in one step; the previous ``out`` is then deleted.

    On Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two folders atomically, so a kill at any
    instant leaves the old run or the new one at ``out``. Where the filesystem (or OS) cannot
    exchange, the old run is first renamed to ``.<name>.stmil-old`` and the new one renamed into
    place: a kill between those two renames leaves no ``out`` for an instant, and the next
    ``stmil train`` into ``out`` puts the old run back.
    """
    if not out.exists():
        os.rename(staging, out)
        return
    if _exchange(staging, out):
        shutil.rmtree(staging)
        return
    old = _old_path(out)
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2``; False where that is not supported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def lock_folder(folder: Path, out: Path) -> int | None:
    """Lock ``folder`` for this process (``flock`` on it); :class:`OutputError` if another holds
    it. Returns the descriptor to close to release it (None where there is no ``flock``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(f"{out}: another stmil train is writing it ({folder} is locked); "
                          "wait for it or choose another --out") from None
    return fd


# --- training into a staging folder: one context manager -----------------------------------------


@dataclass(frozen=True)
class Staging:
    """A run's next version while it trains: ``folder`` is the hidden staging folder beside the
    run (everything training writes goes there) and ``checkpoint`` the ``(sidecar, tensors)``
    to resume from (:func:`read_checkpoint`), or None for a fresh start."""

    folder: Path
    checkpoint: tuple[dict, dict[str, torch.Tensor]] | None


@contextmanager
def staged_run(out: Path, cfg: TrainConfig, fingerprint: dict, *, resume: bool,
               command: str) -> Iterator[Staging]:
    """Train the next version of the run folder ``out`` in its staging folder, and commit it.

    Entering refuses a staging folder that another training holds (locked) or that holds files
    stmil did not write, opens the checkpoint to resume from (``resume``; ``fingerprint``, see
    :func:`resume_fingerprint`, must match the one it recorded) or discards an interrupted
    training, and locks the folder. Leaving normally removes the checkpoint and bag cache,
    writes the run's ledger as ``command`` (:func:`stmil.ownership.record_folder`) and commits
    the folder over ``out`` in one step (:func:`commit_folder`). Leaving on any exception (a
    ``KeyboardInterrupt`` too) keeps the staging folder only for its checkpoint, so
    ``--resume`` can continue, and otherwise removes it and the empty parents it created: the
    previous run is untouched either way. A SIGKILL leaves the staging folder as it was, which
    the next training into ``out`` resumes or discards.
    """
    stage = staging_path(out)
    with naming(out, stage):  # a full or read-only disk names the run, not its staging folder
        if stage.is_dir():  # refuse a concurrent training before touching its staging folder
            _unlock(lock_folder(stage, out))
        checkpoint = _open_staging(stage, out, resume, cfg, fingerprint)
        top = _first_missing(stage)
        stage.mkdir(parents=True, exist_ok=True)
        lock = lock_folder(stage, out)
        try:
            yield Staging(stage, checkpoint)
            _finish(stage)
            record_folder(stage, command)  # the run's ledger, committed with it in one step
            commit_folder(stage, out)
        except BaseException:
            _abandon(stage, top)
            raise
        finally:
            _unlock(lock)


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


def resume_fingerprint(config: dict, data: str | Path, features: str | Path,
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
            it = safejson.loads(ckpt.read_text()).get("iteration")
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



# --- checkpoints: safetensors + a JSON sidecar, no pickle ---------------------------------------


def save_checkpoint(folder: Path, model: Scorer, optim: torch.optim.Optimizer, rng_state: dict,
                    state: dict, config: dict) -> Path:
    """Write ``checkpoint-<iteration>.safetensors`` then ``checkpoint.json`` naming it.

    The JSON (iteration, history, numpy RNG state, optimizer settings, the resolved config)
    records the tensor file's name and sha256 and is written last, so a kill at any instant
    leaves a consistent pair; older tensor files are deleted after it. Returns the JSON path.
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optim.state_dict()
    for idx, entries in opt["state"].items():
        for key, value in entries.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value)
    if state["best"] is not None:
        tensors |= {f"best.{k}": v for k, v in state["best"].items()}
    tensors["torch_rng"] = torch.get_rng_state()
    dev = next(model.parameters()).device
    if dev.type == "cuda":  # dropout masks on a GPU come from its generator
        tensors["cuda_rng"] = torch.cuda.get_rng_state(dev)
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    name = f"checkpoint-{state['iteration']:08d}.safetensors"
    write_bytes(folder / name, blob)
    sidecar = {"format": "stmil-checkpoint", "version": 1, "file": name,
               "sha256": hashlib.sha256(blob).hexdigest(), "iteration": state["iteration"],
               "history": state["history"], "best_auc": state["best_auc"],
               "stale": state["stale"], "numpy_rng": rng_state,
               "optim_groups": opt["param_groups"], "config": config}
    path = folder / CHECKPOINT_JSON
    write_text(path, json.dumps(sidecar))
    for old in folder.glob("checkpoint-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return path


@dataclass(frozen=True, kw_only=True)
class CheckpointHeader(Settings):
    """The scalar fields of ``checkpoint.json`` (:func:`save_checkpoint`); its records
    (``history``, ``numpy_rng``, ``optim_groups``, ``config``) are checked by
    :func:`read_checkpoint` and, when restored, by what they are loaded into."""

    file: str = setting(pattern=r"checkpoint-[0-9]+\.safetensors",
                        what="the checkpoint-NNNNNNNN.safetensors beside it")
    sha256: str = setting(pattern="[0-9a-f]{64}", what="64 lowercase hex digits")
    iteration: int = setting(lo=0, hi=math.inf)
    best_auc: float = setting(lo=-1, hi=1, what="-1 (none yet) or a validation AUC from 0 to 1")
    stale: int = setting(lo=0, hi=math.inf)


_SIDECAR_RECORDS = {"history": list, "numpy_rng": dict, "optim_groups": list, "config": dict}


def read_checkpoint(folder: Path, fix: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checkpoint's JSON sidecar and tensors; :class:`ModelError` naming the file if bad."""
    path = folder / CHECKPOINT_JSON
    try:
        side = safejson.loads(path.read_bytes())
    except ValueError as e:
        raise ModelError(f"{path}: corrupt checkpoint (not JSON: {e}); {fix}") from None
    if not isinstance(side, dict) or side.get("format") != "stmil-checkpoint":
        raise ModelError(f"{path}: not a stmil checkpoint; {fix}")
    CheckpointHeader.from_mapping(side, path, fix=fix, error=ModelError, others="ignore")
    for key, typ in _SIDECAR_RECORDS.items():
        if not isinstance(side.get(key), typ):
            raise ModelError(f"{path}: corrupt checkpoint ({key} is {side.get(key)!r}); {fix}")
    if len(side["history"]) != side["iteration"] or not all(
            isinstance(r, dict) and isinstance(r.get("loss"), (int, float))
            for r in side["history"]):
        raise ModelError(f"{path}: corrupt checkpoint (history does not match iteration "
                         f"{side['iteration']}); {fix}")
    tfile = folder / side["file"]
    try:
        blob = tfile.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{tfile}: missing (named by {path}); {fix}") from None
    if hashlib.sha256(blob).hexdigest() != side["sha256"]:
        raise ModelError(f"{tfile}: corrupt checkpoint (sha256 differs from {path}); {fix}")
    try:
        tensors, _ = _read_safetensors(blob)
    except ValueError as e:
        raise ModelError(f"{tfile}: corrupt checkpoint ({e}); {fix}") from None
    return side, tensors


def restore_checkpoint(side: dict, tensors: dict[str, torch.Tensor], model: Scorer,
                       optim: torch.optim.Optimizer) -> dict:
    """Load the model, optimizer and torch RNG from a checkpoint; return the loop state.

    Raises ``ValueError``/``RuntimeError``/``KeyError``/``TypeError`` if the pieces do not fit.
    """
    part = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(part)
    opt_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[key] = v
    optim.load_state_dict({"state": opt_state, "param_groups": side["optim_groups"]})
    torch.set_rng_state(tensors["torch_rng"])
    dev = next(model.parameters()).device
    if dev.type == "cuda" and "cuda_rng" in tensors:  # else: resumed on another device
        torch.cuda.set_rng_state(tensors["cuda_rng"], dev)
    best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
    return {"iteration": side["iteration"], "history": side["history"],
            "best_auc": float(side["best_auc"]), "best": best or None, "stale": side["stale"]}


def resume_mismatch(recorded: dict, given: dict) -> str | None:
    """The first setting a resumed training cannot honour, as ``"lr 0.01 recorded vs 5.0
    given"``, or None. Iterations, checkpoint interval and device may change."""
    # settings "auto" resolves (method, gate) last: they follow from the others
    for key in sorted(set(recorded) | set(given),
                      key=lambda k: (k not in FIELDS, k in ("method", "gate"), k)):
        # a setting newer than the run: what the run was trained with
        default = PREDATING.get(key, FIELDS[key].default) if key in FIELDS else None
        if key in RESUMABLE or recorded.get(key, default) == given.get(key, default):
            continue
        if key == "inputs":
            return "the train videos or their feature files changed since the checkpoint"
        return f"{key} {recorded.get(key, default)!r} recorded vs {given.get(key, default)!r} given"
    return None
