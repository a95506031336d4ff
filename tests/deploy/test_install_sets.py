"""The robot's install set (requirements/robot.txt) and the optional tools (requirements/robot-tools.txt).

A robot installs robot.txt only. Everything a robot runs must import without the tool packages,
and a tool started without them ends with one line that names the install command. "Without"
is a child process in which importing the package fails (`sys.modules[name] = None`), as it
does in a venv that lacks it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

REQS = ROOT / "requirements"
TOOLS = ("rosbags", "matplotlib")
BLOCK = "import sys\nfor name in {tools!r}: sys.modules[name] = None\n"


def _names(path) -> set[str]:
    """Lower-case distribution names of a requirements file (`-r` lines followed)."""
    out: set[str] = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line.startswith("-r "):
            out |= _names(path.parent / line[3:].strip())
        elif line:
            name = line.split(";")[0]
            for sep in "[=<>!~ ":
                name = name.split(sep)[0]
            out.add(name.lower())
    return out


def _run(code: str, *, tools: tuple[str, ...] = TOOLS) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK.format(tools=tools) + code], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_robot_set_leaves_the_tools_out_and_the_dev_venv_gets_everything():
    robot, tools = _names(REQS / "robot.txt"), _names(REQS / "robot-tools.txt")
    assert not robot & set(TOOLS), robot
    assert set(TOOLS) <= tools
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for name in ("robot.txt", "robot-tools.txt", "ros.txt", "train.txt", "dev.txt"):
        assert f"requirements/{name}" in setup, name


def test_what_a_robot_runs_imports_without_the_tools():
    code = (
        "import ember.engine, ember.ros.incident_node, ember.ros.camera, ember.serve.app, ember.deploy.cli,"
        " ember.deploy.check, ember.deploy.health, ember.bag.cli, ember.eval.cli\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {TOOLS!r} and sys.modules[m] is not None)\n"
        "assert not loaded, loaded\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        ("from ember.bag.cli import main; sys.exit(main(['info', 'no-such.bag']))", "rosbags"),
        ("from ember.eval.cli import main; sys.exit(main(['bag', '--bag', 'no-such.bag', '--out', {out!r}]))",
         "rosbags"),
        ("from ember.eval.cli import main; sys.exit(main(['bag', '--bag', 'no-such.bag', '--out', {out!r}]))",
         "matplotlib"),
    ],
    ids=["ember-bag", "ember-eval-bag-no-rosbags", "ember-eval-bag-no-matplotlib"],
)
def test_a_tool_without_its_package_fails_in_one_line(argv, missing, tmp_path):
    proc = _run(argv.format(out=str(tmp_path / "report")), tools=(missing,))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert missing in lines[0] and "pip install -r requirements/robot-tools.txt" in lines[0], lines[0]


def test_images_install_the_right_sets():
    """The robot image gets robot.txt alone; the training image (evaluates on bags, plots) gets the tools."""
    from tests.deploy import dockerfile as df

    def installed(name: str) -> str:
        return " ".join(i.args for i in df.parse(ROOT / "docker" / name) if i.keyword in ("RUN", "COPY"))

    assert "-r requirements/robot.txt" in installed("robot.Dockerfile")
    assert "robot-tools" not in installed("robot.Dockerfile")
    assert "-r requirements/robot-tools.txt" in installed("train.Dockerfile")
    assert "!requirements/robot-tools.txt" in (ROOT / "docker" / "train.Dockerfile.dockerignore").read_text()
