"""The project's guard rails: DDS isolation, robot side without torch, installed interfaces."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_interfaces_import_from_the_venv():
    code = (
        "from ember_msgs.msg import IncidentAnalysis, RobotSelection, ActionPlan, ActionStep, RobotStatus;"
        "from ember_msgs.srv import AnalyzeImage, SubmitTask;"
        "assert RobotSelection.NUM_ROBOT_TYPES == 5;"
        "from ember.labels import ROBOT_TYPES; assert RobotSelection.ROBOT_TYPES_CSV.split(',') == list(ROBOT_TYPES)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("missing", ["ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"])
def test_dds_refuses_to_start_without_isolation(missing):
    env = {k: v for k, v in os.environ.items() if k != missing}
    code = "from ember.ros import runtime; runtime.init()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DDSEnvironmentError" in proc.stderr and missing in proc.stderr


def test_robot_side_never_imports_torch():
    code = (
        "import sys, ember, ember.labels, ember.prompting, ember.ros.conversions, ember.engine;"
        "bad = sorted(m for m in ('torch', 'timm', 'transformers', 'torchvision') if m in sys.modules);"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_robot_requirements_do_not_pull_torch():
    lines = (ROOT / "requirements" / "robot.txt").read_text().lower().splitlines()
    names = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    assert names, "robot requirements are empty"
    for heavy in ("torch", "timm", "transformers"):
        assert not [n for n in names if n.startswith(heavy)], names
