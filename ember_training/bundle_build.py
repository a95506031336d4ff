"""`make bundle`: the robots' default INT8 bundle in build/bundle, rebuilt only when stale.

    python -m ember_training.bundle_build --output build/bundle [--checkpoint CKPT]
        [--run-dir DIR ...] [--train-config config/train/tiny.yaml] [--force]

The checkpoint is `--checkpoint`, else the newest final checkpoint of the first run
directory that has one (default build/train/small, then build/train/tiny), preferring
robot_selection/final.pt (calibrated robot thresholds) over stage4_reasoning/final.pt over
any other stage's final.pt. With none, the tiny config is trained here on generated data
(ember-train --stage all, minutes on a laptop) so `make demo` works from a fresh clone; a
GPU-trained small checkpoint in build/train/small is what the robots should ship.

Nothing is done when the bundle exists, came from the same checkpoint and is newer than the
checkpoint and the exporter's code (DESIGN §4).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN_DIRS = (ROOT / "build" / "train" / "small", ROOT / "build" / "train" / "tiny")
PREFERRED = ("robot_selection/final.pt", "stage4_reasoning/final.pt")


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of a run directory to export, or None."""
    for rel in PREFERRED:
        if (run_dir / rel).is_file():
            return run_dir / rel
    finals = sorted(run_dir.glob("*/final.pt"), key=lambda p: p.stat().st_mtime)
    return finals[-1] if finals else None


def _code_mtime() -> float:
    files = [
        *(ROOT / "ember_training" / "export").glob("*.py"),
        ROOT / "ember_training" / "checkpoint_format.py",
    ]
    return max(f.stat().st_mtime for f in files)


def is_up_to_date(output: Path, checkpoint: Path) -> bool:
    meta_path = output / "bundle.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    same_source = meta.get("source", {}).get("checkpoint") == str(checkpoint.resolve())
    built = meta_path.stat().st_mtime
    return same_source and built > checkpoint.stat().st_mtime and built > _code_mtime()


def train(config: Path, run_dir: Path) -> None:
    print(
        f"bundle_build: no trained checkpoint found; training {config} into {run_dir} on generated data "
        "(put a GPU-trained small checkpoint under build/train/small to ship the robots' default model)",
        flush=True,
    )
    cmd = [
        sys.executable,
        "-m",
        "ember_training.cli.train",
        "--config",
        str(config),
        "--stage",
        "all",
        "--output-dir",
        str(run_dir),
        "--resume",
    ]
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bundle_build", description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=ROOT / "build" / "bundle")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument(
        "--run-dir", type=Path, action="append", default=None, help="run directories to search, in order"
    )
    p.add_argument("--train-config", type=Path, default=ROOT / "config" / "train" / "tiny.yaml")
    p.add_argument(
        "--calibration-images", type=Path, default=ROOT.parent / "shared" / "data" / "incidents" / "images"
    )
    p.add_argument("--force", action="store_true", help="export even when the bundle is up to date")
    args = p.parse_args(argv)

    checkpoint = args.checkpoint
    run_dirs = [Path(d) for d in (args.run_dir or DEFAULT_RUN_DIRS)]
    if checkpoint is None:
        checkpoint = next((c for c in map(find_checkpoint, run_dirs) if c is not None), None)
    if checkpoint is None:
        run_dir = run_dirs[-1]
        train(args.train_config, run_dir)
        checkpoint = find_checkpoint(run_dir)
        if checkpoint is None:
            print(f"bundle_build: training finished without a final checkpoint in {run_dir}", file=sys.stderr)
            return 1
    if not checkpoint.is_file():
        print(f"bundle_build: checkpoint not found: {checkpoint}", file=sys.stderr)
        return 2
    if not args.force and is_up_to_date(args.output, checkpoint):
        print(f"bundle_build: {args.output} is up to date ({checkpoint})")
        return 0

    from ember_training.export.cli import export_checkpoint

    calib = args.calibration_images if args.calibration_images and args.calibration_images.is_dir() else None
    meta = export_checkpoint(checkpoint, args.output, "int8", calib)
    checks = meta["export_checks"]
    print(
        f"bundle_build: {args.output} from {checkpoint} ({meta['model_version']}); INT8 top-1 agreement "
        f"{checks['int8_top1_agreement']:.3f}, FP32 parity {checks['fp32_max_abs_logit_diff']:.1e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
