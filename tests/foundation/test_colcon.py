"""The distro path: `colcon build` of ros2_ws against the wheel-based ROS 2 in the venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_colcon_builds_the_workspace(tmp_path: Path):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.fail("colcon is not installed in the venv (requirements/dev.txt)")
    venv = Path(sys.executable).parents[1]
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "AMENT_PREFIX_PATH": str(venv),
        "CMAKE_PREFIX_PATH": str(venv),
    }
    cmd = [
        str(colcon), "--log-base", str(tmp_path / "log"), "build",
        "--base-paths", str(ROOT / "ros2_ws" / "src"),
        "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
        "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    install = tmp_path / "install"
    share = install / "ember" / "share" / "ember"
    assert (share / "launch" / "fleet.launch.py").is_file()
    assert (share / "config" / "fleet.yaml").is_file()
    assert (install / "ember" / "share" / "ament_index" / "resource_index" / "packages" / "ember").is_file()
    for exe in ("incident_node", "fleet_manager"):
        assert (install / "ember" / "lib" / "ember" / exe).is_file(), exe
    generated = list((install / "ember_msgs").rglob("ember_msgs/msg/_incident_analysis.py"))
    assert generated, "ember_msgs Python interfaces were not generated"
    shutil.rmtree(tmp_path / "build", ignore_errors=True)
