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

Checkpoints travel between people (a GPU-trained final.pt copied to the machine that runs
`make bundle`), so they hold plain data only: tensors, dicts, lists, tuples, str, int, float, bool,
None. `checkpoint_dict` refuses anything else at write time, and `load_checkpoint` reads with
torch's safe unpickler (weights_only=True), so a file carrying a pickled object that would run code
is refused, never executed. Files written before the RNG state became plain data hold numpy's MT19937
key as a uint32 ndarray: those, and only those numpy types, are read through a narrow allow-list.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from ember_training.model import EmberVLM, ModelConfig

CHECKPOINT_FORMAT = "ember-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model", "config", "tokenizer", "step")

PLAIN_TYPES: frozenset[type] = frozenset({
    dict, OrderedDict, list, tuple, str, bytes, int, float, bool, type(None),
    torch.Tensor, torch.nn.Parameter, torch.Size, torch.dtype, torch.device,
})
"""Exact types torch.load(weights_only=True) rebuilds with no allow-list (np.float64 is a float
subclass, and refused: the type must match exactly)."""

try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

LEGACY_SAFE_GLOBALS: list[Any] = [  # numpy 2 names the function numpy._core..., numpy 1.x numpy.core...
    (_np_reconstruct, "numpy._core.multiarray._reconstruct"), (_np_reconstruct, "numpy.core.multiarray._reconstruct"),
    np.ndarray, np.dtype, np.dtypes.UInt32DType,
]
"""What checkpoints written before plain RNG states need: numpy's MT19937 key, a uint32 ndarray.
Other dtypes (object arrays above all) still fail to build, so nothing else gets through."""
LEGACY_GLOBAL_NAMES = frozenset({
    "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
})


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


def check_plain(obj: Any, where: str = "") -> None:
    """TypeError naming the first value (as key path) that torch's safe unpickler could not read back."""
    kind = type(obj)
    if kind not in PLAIN_TYPES:
        name = f"{kind.__module__}.{kind.__qualname__}"
        raise TypeError(f"checkpoint key {where or '<top>'} holds a {name}, which a safe load "
                        "(torch.load weights_only=True) cannot read: store tensors, lists, dicts, str, int, float, "
                        "bool or None")
    if kind in (dict, OrderedDict):
        for key, value in obj.items():
            check_plain(key, f"{where}<key>")
            check_plain(value, f"{where}.{key}" if where else str(key))
    elif kind in (list, tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")


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
    check_plain({k: v for k, v in ckpt.items() if k != "model"})  # the model part: detached tensors above
    return ckpt


def _umask() -> int:
    """The process's umask: from /proc (Linux) without changing it, else set and put back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file in the same directory, fsync, then rename over `path`. The file gets
    the mode open() would give it under the umask (mkstemp's 0600 kept teammates on a shared server
    from exporting or evaluating it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        except OSError:  # a file system without Unix modes (some network mounts): mkstemp's 0600 stays
            pass
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
    ckpt = _safe_load(path, map_location)
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


def _reason(exc: BaseException) -> str:
    """One line of a torch.load error: the refused global's name, else the message without torch's
    multi-line advice (which suggests weights_only=False)."""
    text = str(exc)
    m = re.search(r"(?i)unsupported (?:global: )?GLOBAL ([\w.]+)", text)
    if m:
        return m.group(1)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed"):
        text = text.split("\n", 1)[-1]
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.strip().startswith("Check the documentation")]
    return lines[0] if lines else type(exc).__name__


def _is_refusal(exc: BaseException) -> bool:
    """torch's safe unpickler met something it does not rebuild (rather than a damaged file)."""
    return isinstance(exc, pickle.UnpicklingError) and re.search(r"GLOBAL|allowlist", str(exc)) is not None


def _unsafe_globals(path: Path) -> list[str]:
    """Python objects (module.name) the file's pickle would import; [] if it cannot be scanned."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint: the load error says why
        return []


def _refused(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"refused {path}: it holds pickled Python objects beyond tensors and plain data ({what}); unpickling them "
        "could run code, so nothing in it was loaded or run. ember-train's checkpoints hold only tensors and plain "
        "data: get the file ember-train wrote from its trainer again, or retrain")


def _safe_load(path: Path, map_location: str | torch.device) -> Any:
    """torch.load with weights_only=True; files written before plain RNG states with the numpy allow-list."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first_error = exc
    unsafe = _unsafe_globals(path)
    if unsafe and not set(unsafe) <= LEGACY_GLOBAL_NAMES:
        raise _refused(path, ", ".join(sorted(set(unsafe) - LEGACY_GLOBAL_NAMES)))
    if not unsafe:
        if _is_refusal(first_error):
            raise _refused(path, _reason(first_error))
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(first_error)}") from first_error
    try:  # an older ember-train checkpoint: numpy's RNG key as a uint32 ndarray
        with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if _is_refusal(exc):  # e.g. an object-dtype array: its dtype is not allow-listed
            raise _refused(path, _reason(exc)) from None
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(exc)}") from exc


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
