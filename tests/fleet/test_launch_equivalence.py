"""launch/fleet.launch.py and `ember-fleet` describe the same nodes (both from config/fleet.yaml).

launch_ros is not installable from PyPI, so this test runs the real launch file against
minimal stand-ins of `launch` and `launch_ros` (put on sys.path inside this test only) that
record the Node keyword arguments, and compares them with `ember-fleet --dry-run`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "fleet.launch.py"
RCL_BUILTINS = {"use_sim_time", "start_type_description_service"}  # every rclpy node declares them

STANDINS = {
    "launch/__init__.py": '''
class LaunchDescription:
    def __init__(self, entities=None):
        self.entities = list(entities or [])
''',
    "launch/actions.py": '''
class DeclareLaunchArgument:
    def __init__(self, name, default_value=None, description=""):
        self.name, self.default_value, self.description = name, default_value, description

class SetEnvironmentVariable:
    def __init__(self, name, value):
        self.name, self.value = name, value

class OpaqueFunction:
    def __init__(self, function, args=None, kwargs=None):
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}
''',
    "launch/substitutions.py": '''
class LaunchConfiguration:
    def __init__(self, name):
        self.name = name
    def perform(self, context):
        return context.launch_configurations[self.name]
''',
    "launch_ros/__init__.py": "",
    "launch_ros/actions.py": '''
class Node:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
''',
}


class _Context:
    def __init__(self, configs: dict[str, str]) -> None:
        self.launch_configurations = configs


@pytest.fixture
def launch_standins(tmp_path, monkeypatch):
    for rel, text in STANDINS.items():
        path = tmp_path / "standins" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "standins"))
    for name in [m for m in sys.modules if m.split(".")[0] in ("launch", "launch_ros")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in ("launch", "launch_ros", "fleet_launch")]:
        del sys.modules[name]


def node_parameters(entry: dict | str, fqn: str) -> dict:
    """The parameter values node `fqn` gets from one `parameters=[...]` entry under launch_ros:
    a dict's string values are re-read as YAML (launch_ros's evaluate_parameter_dict: `yes`
    becomes True), a string is a params file, which the node's rcl reads from `--params-file`:
    read here the same way, by a node of that name (rclpy's Python parser re-reads strings as
    YAML too, so it would not show what the node gets)."""
    if isinstance(entry, dict):
        return {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in entry.items()}
    import rclpy

    namespace, _, name = fqn.rpartition("/")
    context = rclpy.Context()
    rclpy.init(args=["launch_test", "--ros-args", "--params-file", entry], context=context)
    try:
        node = rclpy.create_node(
            name, namespace=namespace or "/", context=context, automatically_declare_parameters_from_overrides=True
        )
        values = {p.name: p.value for p in node.get_parameters_by_prefix("").values() if p.name not in RCL_BUILTINS}
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return values


def launch_actions(arguments: dict[str, str]) -> list:
    """Run generate_launch_description() and its OpaqueFunction: the actions it returns (Nodes,
    SetEnvironmentVariables) for these launch arguments."""
    spec = importlib.util.spec_from_file_location("fleet_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    configs = {e.name: e.default_value for e in ld.entities if type(e).__name__ == "DeclareLaunchArgument"}
    configs.update(arguments)
    actions = []
    for e in ld.entities:
        if type(e).__name__ == "OpaqueFunction":
            actions += e.function(_Context(configs), *e.args, **e.kwargs)
    return actions


def launch_nodes(arguments: dict[str, str]) -> tuple[list[dict], dict[str, str]]:
    """(the Node kwargs, comparable; the environment variables it sets) of the launch file."""
    nodes = launch_actions(arguments)
    env = {n.name: n.value for n in nodes if type(n).__name__ == "SetEnvironmentVariable"}
    out = []
    for n in nodes:
        if type(n).__name__ != "Node":
            continue
        kw = n.kwargs
        fqn = f"{kw['namespace'].rstrip('/')}/{kw['name']}" if kw["namespace"] else f"/{kw['name']}"
        params: dict = {}
        for p in kw["parameters"]:
            params.update(node_parameters(p, fqn))
        out.append(
            {
                "package": kw["package"],
                "executable": kw["executable"],
                "name": kw["name"],
                "namespace": kw["namespace"],
                "parameters": dict(sorted(params.items())),
                "remappings": [list(r) for r in kw.get("remappings", [])],
            }
        )
    return out, env


def fleet_dry_run(*args: str) -> tuple[list[dict], dict[str, str]]:
    res = subprocess.run(
        [sys.executable, "-m", "ember.ros.fleet", "--dry-run", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    keys = ("package", "executable", "name", "namespace", "parameters", "remappings")
    plan = json.loads(res.stdout)
    return [{k: n[k] for k in keys} for n in plan["nodes"]], plan["environment"]


def test_launch_file_and_ember_fleet_start_the_same_nodes(launch_standins, monkeypatch, tmp_path, shared_data):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    bundle = tmp_path / "bundle"  # the launch file checks that the bundle exists; its contents are the nodes' business
    bundle.mkdir()
    # the launch file's default config: config/fleet.yaml of this checkout (cameras from ../shared)
    from_launch, env = launch_nodes({"bundle": str(bundle)})
    from_fleet, fleet_env = fleet_dry_run("--config", "config/fleet.yaml", "--mode", "processes", "--bundle", str(bundle))
    assert from_launch == from_fleet
    assert env == fleet_env == {"FASTDDS_DEFAULT_PROFILES_FILE": str((ROOT / "config" / "fastdds.xml").resolve())}
    assert {n["executable"] for n in from_launch} == {"fleet_manager", "incident_node", "ember-camera"}
    assert len(from_launch) == 11


def test_same_nodes_with_bundle_and_camera_arguments(launch_standins, tmp_path):
    cfg = tmp_path / "fleet.yaml"
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "my_bundle").mkdir()
    cfg.write_text(
        "bundle: nowhere\n"
        "cameras: {enabled: true, video: clip.mp4, format: jpeg}\n"
        "robots:\n  - {id: a1, type: underwater, camera_topic: cam/left}\n  - {id: b2, type: drone, camera: false}\n"
    )
    bundle = str(tmp_path / "my_bundle")
    from_launch, env = launch_nodes({"config": str(cfg), "bundle": bundle, "cameras": "true"})
    assert (from_launch, env) == fleet_dry_run("--config", str(cfg), "--bundle", bundle)
    assert env == {}  # no dds_profile in this file
    assert [n["name"] for n in from_launch] == ["fleet_manager", "incident_node", "camera", "incident_node"]
    assert from_launch[1]["parameters"]["bundle"] == str(Path(bundle).resolve())
    assert from_launch[1]["parameters"]["image_topic"] == "cam/left"
    assert from_launch[2]["parameters"]["topic"] == "cam/left/compressed"  # follows camera_topic
    no_cams, _ = launch_nodes({"config": str(cfg), "bundle": bundle, "cameras": "false"})
    assert no_cams == fleet_dry_run("--config", str(cfg), "--bundle", bundle, "--no-cameras")[0]
    assert "camera" not in [n["name"] for n in no_cams]


def test_ember_fleet_set_overrides_one_nodes_parameter():
    nodes, _ = fleet_dry_run("--config", "config/fleet.yaml", "--set", "legged_1:processing_delay_s=0.5",
                             "--set", "/fleet_manager:low_battery=0.3")
    by_name = {(n["namespace"], n["name"]): n["parameters"] for n in nodes}
    assert by_name[("/legged_1", "incident_node")]["processing_delay_s"] == 0.5
    assert by_name[("/drone_1", "incident_node")]["processing_delay_s"] == 0.0
    assert by_name[("", "fleet_manager")]["low_battery"] == 0.3
    res = subprocess.run([sys.executable, "-m", "ember.ros.fleet", "--dry-run", "--set", "legged_1:battery=full"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "battery expects float" in res.stderr


def test_string_parameters_that_read_as_yaml_scalars_stay_strings(launch_standins, tmp_path):
    """launch_ros re-reads strings of parameter dicts as YAML: a robot named `yes` on topic `on`
    would reach its node as True/True. Passed in params files, they stay strings."""
    cfg = tmp_path / "fleet.yaml"
    (tmp_path / "b").mkdir()
    cfg.write_text("bundle: b\nrobots:\n  - {id: 'yes', type: drone, camera_topic: 'on', camera: false}\n")
    from_launch, _ = launch_nodes({"config": str(cfg), "cameras": "false"})
    assert from_launch == fleet_dry_run("--config", str(cfg), "--no-cameras")[0]
    robot = next(n for n in from_launch if n["executable"] == "incident_node")
    assert robot["namespace"] == "/yes"
    assert robot["parameters"]["robot_id"] == "yes" and robot["parameters"]["image_topic"] == "on"
    manager = next(n for n in from_launch if n["executable"] == "fleet_manager")
    assert manager["parameters"]["robot_ids"] == ["yes"]


def test_a_fleet_file_whose_paths_do_not_exist_is_one_clear_error(launch_standins, tmp_path):
    """`ros2 launch ember fleet.launch.py` after colcon build reads the installed copy of
    config/fleet.yaml, whose relative bundle and image paths then point into install/: one
    error naming them and the launch arguments that help, not one failure per node."""
    installed = tmp_path / "install" / "ember" / "share" / "ember" / "config" / "fleet.yaml"
    installed.parent.mkdir(parents=True)
    for name in ("fleet.yaml", "fastdds.xml"):  # what setup.py installs into share/ember/config
        (installed.parent / name).write_text((ROOT / "config" / name).read_text())
    with pytest.raises(RuntimeError) as err:
        launch_nodes({"config": str(installed)})
    text = str(err.value)
    assert f"bundle {installed.parent.parent / 'build' / 'bundle'}" in text and "cameras.images" in text, text
    assert "config:=" in text and "bundle:=" in text and "cameras:=false" in text
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    nodes, _ = launch_nodes({"config": str(installed), "bundle": str(bundle), "cameras": "false"})
    assert {n["executable"] for n in nodes} == {"fleet_manager", "incident_node"}


def test_a_robot_computer_and_a_base_station_start_their_part_of_the_file(launch_standins, tmp_path):
    """robots:= / manager:= / incident_nodes:= pick nodes as ember-fleet's --robots / --no-manager /
    --no-robots do: one robot's incident node on its computer, the manager alone elsewhere (which
    needs no bundle directory: it runs without the text selector then)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    args = {"bundle": str(bundle), "cameras": "false"}
    robot, _ = launch_nodes({**args, "robots": "drone_1", "manager": "false"})
    assert robot == fleet_dry_run("--bundle", str(bundle), "--no-cameras", "--robots", "drone_1", "--no-manager")[0]
    assert [(n["namespace"], n["executable"]) for n in robot] == [("/drone_1", "incident_node")]
    two, _ = launch_nodes({**args, "robots": "drone_1, legged_1"})
    assert [n["namespace"] for n in two] == ["", "/drone_1", "/legged_1"]
    base, _ = launch_nodes({"bundle": str(tmp_path / "not_here"), "incident_nodes": "false"})
    assert base == fleet_dry_run("--bundle", str(tmp_path / "not_here"), "--no-robots")[0]
    assert [n["executable"] for n in base] == ["fleet_manager"]
    with pytest.raises(Exception, match=r"no robot drone_9 in .*fleet.yaml \(it has drone_1, humanoid_1"):
        launch_nodes({**args, "robots": "drone_9"})
