"""The robot image's health check against a real incident node started from a deploy package.

The node gets exactly the arguments `run.sh ros` gives `ros2 run ember incident_node`
(params file, namespace, bundle), run with `python -m` (the wheel-based ROS has no
`ros2 run`), over loopback-only DDS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ember.deploy.package import build_package
from tests.conftest import ROOT
from tests.ros.helpers import child_process

pytestmark = pytest.mark.ros


def _health(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ember.deploy.health", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )


def _run_sh_ros_args(pkg: Path, tmp_path: Path) -> list[str]:
    """The node arguments `run.sh ros` passes to `ros2 run ember incident_node` (read off a stub ros2)."""
    stub = tmp_path / "bin" / "ros2"
    stub.parent.mkdir()
    stub.write_text('#!/bin/bash\nprintf "%s\\0" "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(pkg / "run.sh"), "ros"], capture_output=True, env=env, timeout=30, check=True)
    args = out.stdout.decode().split("\0")[:-1]
    assert args[:3] == ["run", "ember", "incident_node"], args
    return args[3:]


def test_health_follows_the_robots_heartbeat(tiny_bundle, tmp_path):
    pkg = build_package(tiny_bundle, tmp_path / "wheeled_1", ROOT / "config" / "fleet.yaml", robot_id="wheeled_1").path
    ros_args = _run_sh_ros_args(pkg, tmp_path)
    assert ros_args[:3] == ["--ros-args", "-r", "__ns:=/wheeled_1"] and f"bundle:={pkg / 'bundle'}" in ros_args
    node_args = ["-m", "ember.ros.incident_node", *ros_args]
    with child_process(node_args, ready_line="READY", timeout=60):
        ok = _health("--robot-id", "wheeled_1", "--timeout", "20")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "healthy: heartbeat from wheeled_1" in ok.stdout
        other = _health("--robot-id", "drone_7", "--timeout", "2")
        assert other.returncode == 1
        assert "unhealthy: no heartbeat from robot drone_7 on /fleet/status within 2 s" in other.stderr
    gone = _health("--timeout", "2")  # the node has stopped: nothing publishes any more
    assert gone.returncode == 1 and "no heartbeat from any robot" in gone.stderr
