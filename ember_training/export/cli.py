"""`ember-export --checkpoint CKPT --output BUNDLE --precision {int8,fp32} [--calibration-images DIR]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ember_training.checkpoint_format import CheckpointError, model_from_checkpoint, tokenizer_of
from ember_training.export.bundle_writer import (
    MAX_INT8_SCORE_DRIFT,
    MIN_INT8_TOP1_AGREEMENT,
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
    min_int8_top1_agreement: float = MIN_INT8_TOP1_AGREEMENT,
    max_int8_score_drift: float = MAX_INT8_SCORE_DRIFT,
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
        min_int8_top1_agreement=min_int8_top1_agreement,
        max_int8_score_drift=max_int8_score_drift,
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


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def check_summary(checks: dict[str, Any]) -> list[str]:
    """Readable lines of the export checks (bundle.json export_checks has them all)."""
    lines = [f"FP32 vs PyTorch: max |logit diff| {checks['fp32_max_abs_logit_diff']:.1e} "
             f"(limit {checks['fp32_logit_tolerance']:g})"]
    if "int8_top1_agreement" in checks:
        v, g = checks["verify_images"], checks["int8_gates"]
        n = v["held_out"] + v["generated"]
        lines.append(
            f"INT8 vs FP32 on {n} image(s) not calibrated on ({v['held_out']} from the folder, {v['generated']} "
            f"generated; calibrated on {checks['calibration_images']}): next-token agreement "
            f"{checks['int8_top1_agreement']:.3f} (gate >= {g['min_int8_top1_agreement']:g}), robot selection "
            f"{checks['int8_robot_selection_agreement']:.2f}, top incident {checks['int8_incident_top1_agreement']:.2f}, "
            f"identical generations {checks['int8_generation_agreement']:.2f}, score drift robot "
            f"{checks['int8_robot_score_max_drift']:.3f} / incident {checks['int8_incident_score_max_drift']:.3f} "
            f"(gate <= {g['max_int8_score_drift']:g}), visual cosine >= {checks['int8_visual_min_cosine']:.3f}"
        )
    return lines


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
    p.add_argument(
        "--min-int8-top1-agreement", type=_fraction, default=MIN_INT8_TOP1_AGREEMENT,
        help=f"INT8 gate: least next-token agreement with FP32 (default {MIN_INT8_TOP1_AGREEMENT}; 0: off)",
    )
    p.add_argument(
        "--max-int8-score-drift", type=_fraction, default=MAX_INT8_SCORE_DRIFT,
        help=f"INT8 gate: largest robot/incident score change vs FP32 (default {MAX_INT8_SCORE_DRIFT}; 1: off)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
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
            args.min_int8_top1_agreement,
            args.max_int8_score_drift,
        )
    except EXPORT_ERRORS as exc:
        print(f"ember-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle: {args.output} ({meta['precision']}, {bundle_size_bytes(args.output) / 2**20:.2f} MiB)")
    print(f"model_version: {meta['model_version']}")
    for line in check_summary(meta["export_checks"]):
        print(line)
    print("checks: " + json.dumps(meta["export_checks"], sort_keys=True))
    print(f"export took {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
