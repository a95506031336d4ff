"""The robot side of Ember (ROS 2 package `ember`, ament_python).

Installs with pip into a venv (embedded default) or with colcon on a ROS 2 distro,
where launch/ and config/ go to share/ember so `ros2 launch ember fleet.launch.py` works.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "ember"
HERE = Path(__file__).resolve().parent


# requirements.txt links to requirements/robot.txt (install_requires); the tools set lies beside it.
ROBOT_REQUIREMENTS = HERE / "requirements.txt"
TOOLS_REQUIREMENTS = ROBOT_REQUIREMENTS.resolve().parent / "robot-tools.txt"


def _requirements(req: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in req.read_text().splitlines() if line.split("#")[0].strip()]


def _extras() -> dict[str, list[str]]:
    """`pip install 'ros2_ws/src/ember[tools]'`: requirements/robot-tools.txt (rosbags, matplotlib). The
    robot image copies requirements/robot.txt alone: there the package has no tools extra."""
    return {"tools": _requirements(TOOLS_REQUIREMENTS)} if TOOLS_REQUIREMENTS.is_file() else {}


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    package_data={"ember": ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=_requirements(ROBOT_REQUIREMENTS),
    extras_require=_extras(),
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="Ember developers",
    description="EmberVLM incident analysis and fleet planning for ROS 2",
    license="MIT",
    entry_points={
        "console_scripts": [
            # ROS 2 executables (`ros2 run ember <name>`)
            "incident_node = ember.ros.incident_node:main",
            "fleet_manager = ember.ros.fleet_manager:main",
            # embedded-default tools
            "ember-fleet = ember.ros.fleet:main",
            "ember-camera = ember.ros.camera:main",
            "ember-task = ember.ros.operator:main",
            "ember-bag = ember.bag.cli:main",
            "ember-eval = ember.eval.cli:main",
            "ember-serve = ember.serve.app:main",
            "ember-deploy = ember.deploy.cli:main",
        ],
    },
)
