"""The checkpoint file shared by the trainer and the exporter.

One `torch.save` dict, written atomically (temp file + rename):

    format           "ember-checkpoint"
    format_version   1
    model            EmberVLM state_dict
    config           the full training config as a dict; config["model"] is the ModelConfig
    decoder_config   the decoder's transformers config dict (rebuilds a pretrained LM's shape offline)
    tokenizer        the tokenizer.json text (HF tokenizers), so a checkpoint is self-contained
    step             global optimisation step

The trainer adds its own keys (optimizer, scheduler, rng, data position, stage, ...);
`save_checkpoint(..., extra=...)` writes them and `load_checkpoint` returns them untouched.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from ember_training.model import EmberVLM, ModelConfig

CHECKPOINT_FORMAT = "ember-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model", "config", "tokenizer", "step")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not in this format."""


def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"config must be a dict or a dataclass, got {type(config).__name__}")


def _tokenizer_json(tokenizer: Tokenizer | str | Path) -> str:
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.to_str()
    path = Path(tokenizer)
    if path.is_dir():
        path = path / "tokenizer.json"
    return path.read_text(encoding="utf-8")


def checkpoint_dict(
    model: EmberVLM,
    config: Any,
    tokenizer: Tokenizer | str | Path,
    step: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model part of a checkpoint (plus `extra` keys) as a dict ready for torch.save."""
    cfg = _config_dict(config)
    if "model" not in cfg:
        cfg = {**cfg, "model": model.config.to_dict()}
    model = getattr(model, "module", model)  # DDP
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": cfg,
        "decoder_config": model.decoder.lm.config.to_dict(),
        "tokenizer": _tokenizer_json(tokenizer),
        "step": int(step),
    }
    for key, value in (extra or {}).items():
        if key in ckpt:
            raise KeyError(f"extra checkpoint key {key!r} would overwrite the model part")
        ckpt[key] = value
    return ckpt


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(
    path: str | Path,
    model: EmberVLM,
    config: Any,
    tokenizer: Tokenizer | str | Path,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its path."""
    return atomic_torch_save(checkpoint_dict(model, config, tokenizer, step, extra), path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint dict (CheckpointError with the reason otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated / not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not an Ember checkpoint (got {type(ckpt).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks checkpoint key(s) {missing}")
    if ckpt.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {ckpt.get('format')!r}")
    if int(ckpt.get("format_version", CHECKPOINT_VERSION)) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {ckpt['format_version']} is newer than this code")
    if "model" not in ckpt["config"]:
        raise CheckpointError(f"{path}: config has no `model` section")
    return ckpt


def model_config_of(ckpt: dict[str, Any]) -> ModelConfig:
    return ModelConfig.from_dict(ckpt["config"]["model"])


def tokenizer_of(ckpt: dict[str, Any]) -> Tokenizer:
    """The checkpoint's tokenizer (JSON text, or a path for older files)."""
    tok = ckpt["tokenizer"]
    if isinstance(tok, str) and tok.lstrip().startswith("{"):
        return Tokenizer.from_str(tok)
    return Tokenizer.from_file(str(Path(tok) / "tokenizer.json" if Path(tok).is_dir() else tok))


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> tuple[EmberVLM, dict[str, Any]]:
    """Rebuild EmberVLM from a checkpoint (dict or path) with no pretrained files; returns (model, ckpt)."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = dataclasses.replace(model_config_of(ckpt), vision_pretrained=None, decoder_pretrained=None)
    model = EmberVLM(cfg, decoder_hf_config=ckpt.get("decoder_config"))
    result = model.load_state_dict(ckpt["model"], strict=True)
    del result
    model.eval()
    return model, ckpt
