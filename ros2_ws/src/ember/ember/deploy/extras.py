"""The install sets of the robot side: what a robot installs, and the optional tools.

requirements/robot.txt is what every robot installs (the engine, the incident node, the camera
node, ember-serve, ember-deploy check). requirements/robot-tools.txt adds the tools a robot does
not need: rosbags (ember-bag, ember-eval bag; a ROS 2 distro records with `ros2 bag`) and
matplotlib (ember-eval's PNG plots). A tool run without its package ends with `tool_missing`'s
one line, which names the install commands (the requirements file, or the package's `tools` extra).
"""

from __future__ import annotations

TOOLS_REQUIREMENTS = "requirements/robot-tools.txt"
#: the same set as the `tools` extra of the ember package (ros2_ws/src/ember/setup.py reads the file)
TOOLS_EXTRA_INSTALL = "pip install 'ros2_ws/src/ember[tools]'"
#: top-level module -> what needs it
TOOL_MODULES = {
    "rosbags": "ember-bag and ember-eval bag (rosbag2 files)",
    "matplotlib": "ember-eval's PNG plots",
}


def tool_missing(exc: ImportError) -> str | None:
    """One line for an ImportError of a tool package: what is missing and how to install it;
    None when `exc` is about any other module (a real error: let it propagate)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in TOOL_MODULES:
        return None
    return (f"the Python package {name} is not installed: {TOOL_MODULES[name]} need it, and a robot's minimal "
            f"install (requirements/robot.txt) leaves it out; install the tools with "
            f"`pip install -r {TOOLS_REQUIREMENTS}` or, with the package, `{TOOLS_EXTRA_INSTALL}` (in a checkout)")
