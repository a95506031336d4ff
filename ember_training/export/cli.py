"""`ember-export --checkpoint CKPT --output BUNDLE --precision {int8,fp32} [--calibration-images DIR]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ember_training.checkpoint_format import CheckpointError, model_from_checkpoint, tokenizer_of
from ember_training.export.bundle_writer import (
    PRECISIONS,
    ExportError,
    ExportOptions,
    bundle_size_bytes,
    export_bundle,
)


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    precision: str = "int8",
    calibration_images: str | Path | None = None,
    num_calibration: int = 16,
    verify_inputs: int = 3,
    max_new_tokens: int = 50,
    model_version: str | None = None,
) -> dict[str, Any]:
    """Export a checkpoint file to a bundle; returns bundle.json. Thresholds, metrics and the
    prompt budget come from the checkpoint (robot_thresholds, metrics, config.data.max_prompt_tokens)."""
    try:
        model, ckpt = model_from_checkpoint(checkpoint)
    except RuntimeError as exc:  # load_state_dict: missing/unexpected keys or shapes of another model
        raise CheckpointError(f"cannot rebuild the model of checkpoint {checkpoint} from its config: {exc}") from exc
    config = ckpt["config"]
    options = ExportOptions(
        precision=precision,
        calibration_images=calibration_images,
        num_calibration=num_calibration,
        verify_inputs=verify_inputs,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=(config.get("data") or {}).get("max_prompt_tokens"),
        model_version=model_version,
        robot_thresholds=ckpt.get("robot_thresholds"),
        robot_selector=selector_of(checkpoint, ckpt),
        metrics=ckpt.get("metrics"),
    )
    source = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "step": int(ckpt.get("step", 0)),
        "stage": ckpt.get("stage"),
        "config_name": config.get("name") or Path(str(config.get("path", "ember"))).stem,
    }
    return export_bundle(model, tokenizer_of(ckpt), output, options, source)


def selector_of(checkpoint: str | Path, ckpt: dict[str, Any]) -> Path | None:
    """The text robot selector a checkpoint names (a file beside it), or None; a named file that
    is missing is an error, never a silently smaller bundle."""
    name = ckpt.get("robot_selector")
    if not name:
        return None
    path = Path(checkpoint).parent / str(name)
    if not path.is_file():
        raise ExportError(f"checkpoint {checkpoint} names robot selector {name}, but {path} is missing")
    return path


EXPORT_ERRORS: tuple[type[Exception], ...] = (CheckpointError, ExportError, OSError, ValueError)
"""What export_checkpoint raises for a bad checkpoint, output or calibration set: one line, exit 2
(OSError: an output that cannot be created)."""


def _at_least_one(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ember-export", description="Export a trained EmberVLM checkpoint to a model bundle."
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint file written by ember-train")
    p.add_argument(
        "--output", required=True, type=Path, help="bundle directory to write (replaced if it is a bundle)"
    )
    p.add_argument("--precision", choices=PRECISIONS, default="int8")
    p.add_argument(
        "--calibration-images",
        type=Path,
        default=None,
        help="images for INT8 calibration (default: generated scenes)",
    )
    p.add_argument(
        "--num-calibration", type=_at_least_one, default=16, help="number of calibration images (default 16)"
    )
    p.add_argument(
        "--max-new-tokens", type=_at_least_one, default=50, help="default generation length stored in bundle.json"
    )
    p.add_argument(
        "--model-version", default=None, help="model_version string (default: config-step-precision-hash)"
    )
    p.add_argument("--verify-inputs", type=_at_least_one, default=3, help="inputs used by the export self-checks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        meta = export_checkpoint(
            args.checkpoint,
            args.output,
            args.precision,
            args.calibration_images,
            args.num_calibration,
            args.verify_inputs,
            args.max_new_tokens,
            args.model_version,
        )
    except EXPORT_ERRORS as exc:
        print(f"ember-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle: {args.output} ({meta['precision']}, {bundle_size_bytes(args.output) / 2**20:.2f} MiB)")
    print(f"model_version: {meta['model_version']}")
    print("checks: " + json.dumps(meta["export_checks"], sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
