"""The `tools` extra of the `ember` package: `pip install 'ros2_ws/src/ember[tools]'` installs
requirements/robot-tools.txt, read from that file as install_requires reads requirements/robot.txt.

setup.py's metadata is built for real (`setup.py egg_info` into a temporary folder), in the checkout
and in the robot image's layout, which carries requirements/robot.txt but not the tools file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

from tests.conftest import ROOT
from tests.deploy.test_install_sets import _run

SRC = ROOT / "ros2_ws" / "src" / "ember"
EXTRA_INSTALL = "pip install 'ros2_ws/src/ember[tools]'"


def _file_requirements(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [str(Requirement(line)) for line in lines if line]


def _metadata(src: Path, tmp: Path) -> dict[str, list[str]]:
    """requires.txt of `setup.py egg_info` in `src`: the requirements of each extra ('' = install_requires)."""
    out = tmp / "egg"
    out.mkdir()
    proc = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(out)], cwd=src,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in (out / "ember.egg-info" / "requires.txt").read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
        elif line.strip():
            sections[current].append(str(Requirement(line)))
    return sections


def test_the_tools_extra_is_robot_tools_txt(tmp_path: Path):
    meta = _metadata(SRC, tmp_path)
    assert sorted(meta[""]) == sorted(_file_requirements(ROOT / "requirements" / "robot.txt"))
    assert sorted(meta["tools"]) == sorted(_file_requirements(ROOT / "requirements" / "robot-tools.txt"))
    assert set(meta) == {"", "tools"}


def test_setup_builds_where_the_tools_file_is_not_shipped(tmp_path: Path):
    """The robot image copies requirements/robot.txt only: its colcon build of setup.py still works
    (no tools extra there: the image records with `ros2 bag`)."""
    root = tmp_path / "image"
    (root / "requirements").mkdir(parents=True)
    shutil.copy(ROOT / "requirements" / "robot.txt", root / "requirements" / "robot.txt")
    shutil.copytree(SRC, root / "ros2_ws" / "src" / "ember", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "config", "launch"))
    meta = _metadata(root / "ros2_ws" / "src" / "ember", tmp_path)
    assert sorted(meta[""]) == sorted(_file_requirements(ROOT / "requirements" / "robot.txt"))
    assert "tools" not in meta


def test_a_tool_without_its_package_names_the_extra():
    proc = _run("from ember.bag.cli import main; sys.exit(main(['info', 'no-such.bag']))", tools=("rosbags",))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "pip install -r requirements/robot-tools.txt" in line and EXTRA_INSTALL in line, line
