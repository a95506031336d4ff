"""The robot side of Ember (ROS 2 package `ember`, ament_python).

Installs with pip into a venv (embedded default) or with colcon on a ROS 2 distro,
where launch/ and config/ go to share/ember so `ros2 launch ember fleet.launch.py` works.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "ember"
HERE = Path(__file__).resolve().parent


def _requirements() -> list[str]:
    req = HERE / "requirements.txt"
    return [line.split("#")[0].strip() for line in req.read_text().splitlines() if line.split("#")[0].strip()]


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
    install_requires=_requirements(),
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
