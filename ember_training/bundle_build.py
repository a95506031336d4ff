"""`make bundle`: the robots' default INT8 bundle in build/bundle, rebuilt only when stale.

    python -m ember_training.bundle_build --output build/bundle [--checkpoint CKPT]
        [--run-dir DIR ...] [--train-config config/train/tiny.yaml] [--force]

The checkpoint is `--checkpoint`, else the newest final checkpoint of the first run
directory that has one (default build/train/small, then build/train/demo), preferring
robot_selection/final.pt (calibrated robot thresholds) over stage4_reasoning/final.pt over
any other stage's final.pt. With none, config/train/demo.yaml (the robots' small.yaml
architecture on a short CPU schedule: generated scenes + the 198 robot-selection tasks,
then the robot-selection recipe) is trained here, so `make demo` works from a fresh clone;
a GPU-trained small checkpoint in build/train/small is what the robots should ship. A demo
run whose resolved training config differs from the current one is stale and retrained.

Nothing is done when the bundle exists, came from the same checkpoint and is newer than the
checkpoint and the exporter's code (DESIGN §4).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN_DIRS = (ROOT / "build" / "train" / "small", ROOT / "build" / "train" / "demo")
INPUTS_FILE = ".bundle-inputs.json"
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
    """The bundle at `output` loads (every file present, hashes match, a format the engine reads),
    came from `checkpoint` and is newer than it and the exporter's code."""
    from ember.engine.bundle import BundleError, load_bundle

    meta_path = output / "bundle.json"
    try:
        meta = load_bundle(output).meta
    except BundleError:
        return False
    same_source = meta.get("source", {}).get("checkpoint") == str(checkpoint.resolve())
    built = meta_path.stat().st_mtime
    return same_source and built > checkpoint.stat().st_mtime and built > _code_mtime()


def config_fingerprint(config: Path) -> str:
    """Hash of the resolved training config (extends applied) that a run was trained with."""
    import hashlib

    from ember_training.config import load_config

    resolved = json.dumps(load_config(config).to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(resolved.encode()).hexdigest()[:16]


def _recorded_inputs(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / INPUTS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def run_is_current(run_dir: Path, config: Path, complete: bool = True) -> bool:
    """The run directory was trained (completely, unless complete=False) from exactly this config."""
    recorded = _recorded_inputs(run_dir)
    if recorded.get("config_fingerprint") != config_fingerprint(config):
        return False
    return recorded.get("complete", False) or not complete


def train(config: Path, run_dir: Path) -> None:
    """Train `config` into `run_dir`, resuming a killed run of the same config, restarting otherwise."""
    if run_dir.exists() and not run_is_current(run_dir, config, complete=False):
        print(f"bundle_build: {run_dir} holds a run of another config; starting it over", flush=True)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    inputs = {"config": str(config), "config_fingerprint": config_fingerprint(config), "complete": False}
    (run_dir / INPUTS_FILE).write_text(json.dumps(inputs))
    print(
        f"bundle_build: training {config} into {run_dir} (CPU: about 10 minutes; progress below). "
        "Put a GPU-trained small checkpoint under build/train/small to ship the robots' default model.",
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
    (run_dir / INPUTS_FILE).write_text(json.dumps({**inputs, "complete": True}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bundle_build", description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=ROOT / "build" / "bundle")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument(
        "--run-dir", type=Path, action="append", default=None, help="run directories to search, in order"
    )
    p.add_argument("--train-config", type=Path, default=ROOT / "config" / "train" / "demo.yaml")
    p.add_argument(
        "--calibration-images", type=Path, default=ROOT.parent / "shared" / "data" / "incidents" / "images"
    )
    p.add_argument("--force", action="store_true", help="export even when the bundle is up to date")
    args = p.parse_args(argv)

    checkpoint = args.checkpoint
    if checkpoint is None and args.run_dir:
        # Explicit run directories: export what they hold, never train into them.
        checkpoint = next((c for c in map(find_checkpoint, args.run_dir) if c is not None), None)
        if checkpoint is None:
            print(f"bundle_build: no final checkpoint in {', '.join(map(str, args.run_dir))}", file=sys.stderr)
            return 2
    if checkpoint is None:
        small_dir, demo_dir = DEFAULT_RUN_DIRS
        checkpoint = find_checkpoint(small_dir)
        if checkpoint is None and run_is_current(demo_dir, args.train_config):
            checkpoint = find_checkpoint(demo_dir)
        if checkpoint is None:
            train(args.train_config, demo_dir)
            checkpoint = find_checkpoint(demo_dir)
            if checkpoint is None:
                print(f"bundle_build: training finished without a final checkpoint in {demo_dir}", file=sys.stderr)
                return 1
    if not checkpoint.is_file():
        print(f"bundle_build: checkpoint not found: {checkpoint}", file=sys.stderr)
        return 2
    if not args.force and is_up_to_date(args.output, checkpoint):
        print(f"bundle_build: {args.output} is up to date ({checkpoint})")
        return 0

    from ember_training.export.cli import EXPORT_ERRORS, check_summary, export_checkpoint

    calib = args.calibration_images if args.calibration_images and args.calibration_images.is_dir() else None
    try:
        meta = export_checkpoint(checkpoint, args.output, "int8", calib)
    except EXPORT_ERRORS as exc:  # as ember-export reports them
        print(f"bundle_build: cannot export {checkpoint}: {exc}", file=sys.stderr)
        return 2
    print(f"bundle_build: {args.output} from {checkpoint} ({meta['model_version']})")
    for line in check_summary(meta["export_checks"]):
        print(f"bundle_build: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
