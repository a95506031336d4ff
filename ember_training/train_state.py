"""Training checkpoints: the model part (ember_training.checkpoint_format) plus everything an
exact resume needs: optimizer, scheduler, grad scaler, RNG states of every rank, data position.

Files of a stage directory:
    checkpoints/step_000050.pt   every train.checkpoint_every steps (the newest train.keep_checkpoints kept)
    final.pt                     written when the stage completes; the next stage starts from it
Each file is written atomically (temp file, fsync, rename), so a kill leaves the previous one.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint_format import CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger("ember_training.train")
STEP_RE = re.compile(r"^step_(\d+)\.pt$")


@dataclass
class DataPosition:
    """Where the data stream stands: epoch and batches already consumed in it (per rank)."""

    epoch: int = 0
    batches: int = 0


def _numpy_state() -> dict[str, Any]:
    """numpy's global RNG as plain data (its MT19937 key as an int64 tensor, no ndarray)."""
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: dict[str, Any] | tuple) -> None:
    """Restore numpy's RNG from `_numpy_state` (or the tuple with an ndarray that older checkpoints hold)."""
    if isinstance(state, dict):
        key = np.asarray(state["key"].numpy(), dtype=np.uint32)
        state = (state["bit_generator"], key, state["pos"], state["has_gauss"], state["cached_gaussian"])
    np.random.set_state(state)


def rng_state() -> dict[str, Any]:
    """This process's torch/numpy/Python (and CUDA) RNG states, as plain data a safe load reads."""
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    _set_numpy_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    config: dict,
    tokenizer: Any,
    step: int,
    stage: str,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    position: DataPosition,
    rng_states: list[dict[str, Any]],
    total_steps: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Model part + optimizer/scheduler/scaler/RNG/data position (+ `extra` top-level keys such as
    `metrics` and `robot_thresholds`, which ember-export reads)."""
    extra = dict(extra or {}) | {
        "stage": stage,
        "total_steps": total_steps,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "data_position": {"epoch": position.epoch, "batches": position.batches},
        "rng": rng_states,
    }
    return save_checkpoint(path, model, config, tokenizer, step, extra=extra)


def step_checkpoints(stage_dir: Path) -> list[Path]:
    """Step checkpoints of a stage, oldest first."""
    ckdir = stage_dir / "checkpoints"
    if not ckdir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckdir.iterdir() if (m := STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(stage_dir: Path) -> dict[str, Any] | None:
    """The newest readable step checkpoint (an unreadable one is reported and passed over)."""
    for path in reversed(step_checkpoints(stage_dir)):
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            log.warning("skipping unreadable checkpoint: %s", e)
            continue
        ckpt["path"] = str(path)
        return ckpt
    return None


def prune(stage_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints, and temp files left by a killed writer."""
    for path in step_checkpoints(stage_dir)[:-keep]:
        path.unlink(missing_ok=True)
    for tmp in (stage_dir / "checkpoints").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
