"""`ember-deploy package`: a self-contained folder to copy to one robot's computer.

    DIR/
      bundle/              the model bundle (bundle.json + the files it lists), hash-checked
      config/robot.yaml    ROS 2 params file of this robot's incident_node (from config/fleet.yaml)
      robot.env            EMBER_ROBOT_ID / EMBER_ROBOT_TYPE, EMBER_RESPAWN_* (and ROS_DISCOVERY_SERVER) for run.sh
      requirements.txt     the robot-side pip requirements (never torch)
      constraints-ros.txt  numpy<2 when installing next to a ROS 2 distro
      python/ember/        the ember package (pure Python) for `run.sh check` and `run.sh serve`
      run.sh               setup | check | ros | docker | serve
      MANIFEST.json        sha256 of every file above, written last

The folder is assembled beside DIR and renamed into place, so DIR is either the old
package or the complete new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

import ember
from ember import fleet_config
from ember.deploy.runscript import CONSTRAINTS_ROS, RUN_SH
from ember.engine.bundle import BUNDLE_JSON, BundleError, BundleFiles, load_consistent, sha256_file
from ember.fsutil import replace_directory

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1
PARAMS_FILE = "config/robot.yaml"
DDS_PROFILE_FILE = "config/fastdds.xml"
"""fleet.yaml's dds_profile, when it has one"""
ROBOT_ENV = "robot.env"
# Written by `run.sh setup` / Python inside the package; never part of the manifest.
VENV = ".venv"
"""the environment `run.sh setup` creates inside the package (kept by `--force`)"""
UNTRACKED_DIRS = frozenset({VENV, "__pycache__"})


class PackageError(RuntimeError):
    """The package could not be built (bad bundle, config, robot or output folder)."""


@dataclass(frozen=True)
class PackageResult:
    """What `build_package` wrote."""

    path: Path
    robot_id: str
    robot_type: str
    model_version: str
    files: int
    bytes: int
    kept_venv: bool = False
    """an existing package's .venv (from `run.sh setup`) was moved into the new one"""
    requirements_changed: bool = False
    """... and the new requirements.txt differs from the one it was installed from"""


def source_root() -> Path | None:
    """The repository root when ember runs from its source tree (editable install), else None."""
    here = Path(ember.__file__).resolve().parent  # .../ros2_ws/src/ember/ember
    for candidate in here.parents:
        if (candidate / "requirements" / "robot.txt").is_file() and (candidate / "ros2_ws").is_dir():
            return candidate
    return None


def default_fleet_config() -> Path | None:
    """config/fleet.yaml of the source tree, or of the colcon install (share/ember/config)."""
    root = source_root()
    if root is not None and (root / "config" / "fleet.yaml").is_file():
        return root / "config" / "fleet.yaml"
    try:
        from ament_index_python.packages import get_package_share_directory

        shared = Path(get_package_share_directory("ember")) / "config" / "fleet.yaml"
        return shared if shared.is_file() else None
    except Exception:  # noqa: BLE001 - no ament index (pip install): no default
        return None


def robot_requirements() -> str:
    """requirements/robot.txt of the source tree, else the installed distribution's requirements."""
    root = source_root()
    if root is not None:
        return (root / "requirements" / "robot.txt").read_text()
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("ember") or []
    except PackageNotFoundError:
        raise PackageError("cannot find the robot requirements: no source tree and no installed `ember`") from None
    lines = [r for r in reqs if "extra ==" not in r]
    return "# Robot side of Ember (from the installed distribution's metadata)\n" + "\n".join(lines) + "\n"


def robot_params(cfg: fleet_config.FleetConfig, robot: fleet_config.RobotConfig) -> dict[str, Any]:
    """The incident node's parameters for `robot`, with the bundle inside the package."""
    params = dict(fleet_config.incident_node_description(cfg, robot).parameters)
    params["bundle"] = "bundle"  # run.sh passes the absolute path with -p bundle:=...
    return params


def _seconds(value: float) -> str:
    """A number of seconds as run.sh reads it: plain decimals, at most 3 places (2.0 -> '2', 0.25 -> '0.25'),
    capped at 1e9 s (31 years: "forever", within the shell's integer milliseconds)."""
    return f"{min(value, 1e9):.3f}".rstrip("0").rstrip(".")


def respawn_env(respawn: fleet_config.RespawnConfig) -> str:
    """robot.env's lines of the robot's fleet.yaml `respawn`, for run.sh's supervisor (`ros`, `docker`)."""
    return ("# fleet.yaml respawn of this robot: run.sh ros|docker restart the node when it exits non-zero,\n"
            "# after DELAY_S, at most MAX_RESTARTS times within WINDOW_S (then it exits with the node's code)\n"
            f"EMBER_RESPAWN={int(respawn.enabled)}\n"
            f"EMBER_RESPAWN_DELAY_S={_seconds(respawn.delay_s)}\n"
            f"EMBER_RESPAWN_MAX_RESTARTS={respawn.max_restarts}\n"
            f"EMBER_RESPAWN_WINDOW_S={_seconds(max(respawn.window_s, 0.001))}\n")


def robot_env(cfg: fleet_config.FleetConfig, robot: fleet_config.RobotConfig) -> str:
    """robot.env: this robot's identity for run.sh and, from fleet.yaml, its respawn setting and the
    discovery server it must use (run.sh exports each line; environment variables of the same name win)."""
    text = ("# This robot's identity for run.sh (environment variables of the same name win).\n"
            f"EMBER_ROBOT_ID={robot.id}\nEMBER_ROBOT_TYPE={robot.type}\n")
    text += respawn_env(robot.respawn)
    if cfg.discovery_server:
        text += f"# fleet.yaml discovery_server\n{fleet_config.DISCOVERY_SERVER_ENV}={cfg.discovery_server}\n"
    return text


def _params_yaml(robot: fleet_config.RobotConfig, params: dict[str, Any], source: str) -> str:
    header = (
        f"# ROS 2 parameters of robot {robot.id}'s incident_node (generated by ember-deploy from {source}).\n"
        f"#   ros2 run ember incident_node --ros-args -r __ns:=/{robot.id} --params-file robot.yaml \\\n"
        "#       -p bundle:=/absolute/path/to/bundle\n"
        "# run.sh does exactly this; `bundle` below is relative to the package folder.\n"
    )
    return header + yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=True)


def _copy_python_package(dst: Path) -> None:
    src = Path(ember.__file__).resolve().parent
    shutil.copytree(src, dst / "ember", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (POSIX relative paths), skipping MANIFEST and untracked dirs."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in UNTRACKED_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel == MANIFEST or name.endswith((".pyc", ".pyo")):
                continue
            out[rel] = sha256_file(path)
    return out


def _copy_bundle(bundle_dir: Path, dst: Path) -> dict[str, Any]:
    """Copy the bundle's files as checked (from the export they belong to, whatever replaces it
    meanwhile), then check the copies."""

    def copy(files: BundleFiles) -> dict[str, Any]:
        shutil.rmtree(dst, ignore_errors=True)  # an attempt on a bundle that was replaced meanwhile
        dst.mkdir(parents=True)
        (dst / BUNDLE_JSON).write_bytes(files.meta_bytes)
        for name in sorted(files.expected):
            with open(dst / name, "wb") as out:
                shutil.copyfileobj(files.open(name), out)
        return files.meta

    try:
        meta = load_consistent(bundle_dir, copy, verify_hashes=True)
    except BundleError as exc:  # with its message naming the problem
        raise PackageError(f"refusing to package {bundle_dir}: {exc}") from exc
    for name, entry in meta["files"].items():
        expected = entry["sha256"] if isinstance(entry, dict) else entry
        if sha256_file(dst / name) != expected:
            raise PackageError(f"copy of {name} into the package does not match its sha256 (disk or copy error)")
    return meta


def build_package(
    bundle_dir: str | Path,
    out_dir: str | Path,
    config_path: str | Path | None = None,
    robot_id: str | None = None,
    force: bool = False,
) -> PackageResult:
    """Assemble the deployment folder for one robot of the fleet config (default: its first robot)."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not force:
        if not out.is_dir() or any(out.iterdir()):
            raise PackageError(f"output {out} exists and is not empty; pass --force to replace it")
    if out.exists() and force and out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise PackageError(f"output {out} is a non-empty folder that is not an Ember package; refusing to replace it")
    config_file = Path(config_path) if config_path else default_fleet_config()
    if config_file is None:
        raise PackageError("no fleet config found: pass --config path/to/fleet.yaml")
    try:
        cfg = fleet_config.load(config_file, bundle=str(bundle_dir))
    except fleet_config.FleetConfigError as exc:
        raise PackageError(str(exc)) from exc
    if robot_id is None:
        robot = cfg.robots[0]
    else:
        try:
            robot = cfg.robot(robot_id)
        except KeyError:
            known = ", ".join(r.id for r in cfg.robots)
            raise PackageError(f"robot {robot_id!r} is not in {config_file} (robots: {known})") from None

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta = _copy_bundle(Path(bundle_dir).expanduser(), stage / "bundle")
        (stage / "config").mkdir()
        if cfg.dds_profile:  # for the robot's camera driver: raw frames > 512 KiB need its shared-memory segment
            shutil.copyfile(cfg.dds_profile, stage / DDS_PROFILE_FILE)
        (stage / PARAMS_FILE).write_text(_params_yaml(robot, robot_params(cfg, robot), str(config_file)))
        (stage / ROBOT_ENV).write_text(robot_env(cfg, robot))
        (stage / "requirements.txt").write_text(robot_requirements())
        (stage / "constraints-ros.txt").write_text(CONSTRAINTS_ROS)
        (stage / "python").mkdir()
        _copy_python_package(stage / "python")
        run_sh = stage / "run.sh"
        run_sh.write_text(RUN_SH)
        run_sh.chmod(0o755)
        digests = file_digests(stage)
        manifest = {
            "format": MANIFEST_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ember_version": ember.__version__,
            "robot_id": robot.id,
            "robot_type": robot.type,
            "model_version": meta.get("model_version", ""),
            "files": digests,
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        stage.chmod(0o755)
        kept_venv, requirements_changed = _take_venv(out, stage)
        try:
            replace_directory(stage, out)
        except BaseException:
            if kept_venv:
                (stage / VENV).rename(out / VENV)
            raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    total = sum((out / rel).stat().st_size for rel in digests)
    return PackageResult(out, robot.id, robot.type, str(meta.get("model_version", "")), len(digests), total,
                         kept_venv, requirements_changed)


def _take_venv(old: Path, stage: Path) -> tuple[bool, bool]:
    """Move the .venv that `run.sh setup` made in the package being replaced into the staged one (same
    path once swapped in, so its absolute paths hold): re-packaging a robot in place must not leave
    `run.sh` without its environment, which an offline robot could not reinstall. Returns (moved,
    requirements.txt differs from the one the environment was installed from)."""
    if not (old / VENV).is_dir() or (old / VENV).is_symlink():
        return False, False
    before = old / "requirements.txt"
    changed = not before.is_file() or before.read_bytes() != (stage / "requirements.txt").read_bytes()
    (old / VENV).rename(stage / VENV)
    return True, changed


def manifest_digest(path: Path) -> str:
    """Short sha256 of MANIFEST.json: one value that names a package's exact contents."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
