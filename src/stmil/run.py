"""The run folder contract: ``model.safetensors`` with the run's config as metadata.

:func:`save_model` is its one writer (called by training) and :func:`load_model` its one
reader (scoring, evaluation, overlays).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from stmil.atomic import atomic_write
from stmil.errors import ModelError
from stmil.mil import Scorer


def save_model(path: Path, model: Scorer, config: dict) -> None:
    """Scorer weights as safetensors, with the run's config as metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"stmil_config": json.dumps(config)}
    atomic_write(path, lambda t: save_file(tensors, str(t), metadata=meta))


def load_model(run: str | Path) -> tuple[Scorer, dict]:
    """The trained scorer of a run folder (eval mode) and the run's config."""
    path = Path(run) / "model.safetensors"
    if not path.is_file():
        raise ModelError(f"{run}: no model.safetensors (is this a run folder?)")
    try:
        with safe_open(str(path), "pt") as f:
            config = json.loads((f.metadata() or {})["stmil_config"])
        model = Scorer(config["in_dim"], config["hidden"], config["mid"], config["dropout"])
        model.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"{path}: not a stmil model ({' '.join(str(e).split())})") from e
    return model.eval(), config
