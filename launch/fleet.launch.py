"""Launch the Ember fleet of config/fleet.yaml on a ROS 2 distro.

    ros2 launch ember fleet.launch.py [config:=/path/fleet.yaml] [bundle:=/path/bundle] [cameras:=false]
                                      [robots:=drone_1,legged_1] [manager:=false] [incident_nodes:=false]

On a robot computer, start only its own incident node: `robots:=drone_1 manager:=false
cameras:=false`; on the base station only the fleet manager: `incident_nodes:=false`
(no cameras either; ember-fleet's --robots, --no-manager, --no-cameras, --no-robots). The default
starts the whole file on one machine.

The nodes come from `ember.fleet_config` (FleetConfig.node_descriptions), the same source
`ember-fleet` uses, so both start the same nodes with the same parameters. The default
config is share/ember/config/fleet.yaml (ament index), or config/fleet.yaml beside this
file's directory in a source checkout. Relative paths in the config (bundle, camera
images) are relative to the config file: pass bundle:= when the installed share/ has none. A
bundle or camera path that does not exist stops the launch with one error naming it.

fleet.yaml's `respawn` (fleet-wide, per robot) becomes each Node's respawn and respawn_delay, and
its max_restarts the Node's respawn_max_retries where the installed launch has that keyword (Jazzy
and later; launch counts it over the whole run, ember-fleet within respawn.window_s).
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def default_config() -> str:
    """share/ember/config/fleet.yaml if the package is installed, else the source checkout's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("ember")) / "config" / "fleet.yaml"
        if installed.is_file():
            return str(installed)
    except Exception:  # noqa: BLE001 - PackageNotFoundError, or no ament index at all
        pass
    return str(Path(__file__).resolve().parents[1] / "config" / "fleet.yaml")


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _launch_has_respawn_max_retries() -> bool:
    """The installed launch's processes take respawn_max_retries (an older one refuses the keyword)."""
    try:
        from launch.actions import ExecuteLocal
    except ImportError:
        return False
    return "respawn_max_retries" in inspect.signature(ExecuteLocal.__init__).parameters


def _fleet_nodes(context, *args, **kwargs) -> list:
    from ember.fleet_config import dds_environment, load
    from ember.ros.fleet import select

    config = LaunchConfiguration("config").perform(context)
    bundle = LaunchConfiguration("bundle").perform(context) or None
    cameras = _truthy(LaunchConfiguration("cameras").perform(context))
    robots = [r.strip() for r in LaunchConfiguration("robots").perform(context).split(",") if r.strip()]
    manager = _truthy(LaunchConfiguration("manager").perform(context))
    incident_nodes = _truthy(LaunchConfiguration("incident_nodes").perform(context))
    cfg = load(config, bundle=bundle)
    selected = select(cfg, robots, cameras, manager, incident_nodes)
    missing = cfg.missing_paths(selected)
    if missing:  # one clear error instead of every node failing on its own
        raise RuntimeError(
            f"{config} names paths that do not exist: {'; '.join(missing)}. Relative paths are relative "
            "to the fleet file (an installed share/ember/config/fleet.yaml has no bundle beside it): pass "
            "config:=/path/to/your/fleet.yaml, or bundle:=/abs/path/to/bundle cameras:=false"
        )
    env = [SetEnvironmentVariable(k, v) for k, v in sorted(dds_environment(cfg).items())]
    # parameters go in files, as in ember-fleet's processes mode: launch_ros would re-read the
    # strings of a parameter dict as YAML (a robot id `yes` becoming a bool)
    params_dir = Path(tempfile.mkdtemp(prefix="ember-launch-"))
    max_retries = _launch_has_respawn_max_retries()
    nodes = []
    for i, d in enumerate(selected):
        nodes.append(Node(**d.launch_kwargs(str(d.write_params_file(params_dir, i)), respawn_max_retries=max_retries)))
    return env + nodes


def generate_launch_description() -> LaunchDescription:
    """The fleet manager, one incident node per robot and (optionally) the replay cameras."""
    return LaunchDescription(
        [
            DeclareLaunchArgument("config", default_value=default_config(), description="fleet file (fleet.yaml)"),
            DeclareLaunchArgument("bundle", default_value="", description="model bundle directory (overrides the file)"),
            DeclareLaunchArgument("cameras", default_value="true", description="start the replay cameras of the file"),
            DeclareLaunchArgument("robots", default_value="", description="comma-separated robot ids to start (default: all)"),
            DeclareLaunchArgument("manager", default_value="true", description="start the fleet manager"),
            DeclareLaunchArgument("incident_nodes", default_value="true", description="start the robots' incident nodes"),
            OpaqueFunction(function=_fleet_nodes),
        ]
    )
