"""Helpers for the model rollout tests: new bundle versions and the ways a user puts them in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ember.fsutil import replace_directory


def with_version(src: Path, dst: Path, version: str) -> Path:
    """A copy of bundle `src` at `dst` whose model_version is `version` (bundle.json is not hashed)."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "bundle.json").read_text())
    meta["model_version"] = version
    (dst / "bundle.json").write_text(json.dumps(meta, indent=1))
    return dst


def swap_in(src: Path, dst: Path) -> None:
    """The rollout step: copy `src` beside `dst`, then swap it in atomically (as ember-export --output does)."""
    staged = dst.with_name(f".{dst.name}.staged")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(src, staged)
    replace_directory(staged, dst)


def corrupt_file(bundle: Path, name: str = "decoder.onnx") -> None:
    """Flip one byte in the middle of `name` (a disk or copy error: sha256 mismatch)."""
    raw = bytearray((bundle / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bundle / name).write_bytes(bytes(raw))


def half_copied(src: Path, dst: Path) -> Path:
    """`src` copied to `dst` with the copy cut off: vision.onnx truncated, decoder.onnx missing."""
    shutil.copytree(src, dst)
    data = (dst / "vision.onnx").read_bytes()
    (dst / "vision.onnx").write_bytes(data[: len(data) // 3])
    (dst / "decoder.onnx").unlink()
    return dst


def reordered_robot_types(src: Path, dst: Path) -> Path:
    """A copy of `src` whose bundle.json lists the robot types in another order than the fleet's."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "bundle.json").read_text())
    meta["robot_types"] = list(reversed(meta["robot_types"]))
    (dst / "bundle.json").write_text(json.dumps(meta, indent=1))
    return dst
