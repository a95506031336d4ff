"""config/fleet.yaml -> dataclasses -> node descriptions (the single source of the fleet).

Both `launch/fleet.launch.py` (launch_ros, on a ROS 2 distro) and `ember-fleet` (the
embedded default) turn `FleetConfig.node_descriptions()` into running nodes, so the two
cannot drift: same packages, executables, names, namespaces, parameters and remappings.

Relative paths in the file (bundle, camera images/video) are relative to the directory of
the file itself (its own symlink resolved), and may use $VARIABLES and ~. A path that is a symlink
stays one, so the nodes' bundle check follows `current -> releases/vN` when an operator flips it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ember.labels import ROBOT_TYPES
from ember.prompting import DEFAULT_TASK

PACKAGE = "ember"
ROBOT_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MANAGER_NAME = "fleet_manager"
INCIDENT_NODE_NAME = "incident_node"
CAMERA_NODE_NAME = "camera"
DISCOVERY_SERVER_ENV = "ROS_DISCOVERY_SERVER"
_DISCOVERY_ENTRY = re.compile(r"^(?:(?:UDPv4|UDPv6|TCPv4|TCPv6):)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::(\d{1,5}))?$")


class FleetConfigError(ValueError):
    """config/fleet.yaml is malformed; the message names the file and the offending key."""


@dataclass(frozen=True)
class InferenceConfig:
    """How each robot's incident node runs the model (fleet-wide, overridable per robot)."""

    threads: int = 1
    max_rate_hz: float = 1.0
    """Most analyses per second; 0 = as fast as the model goes."""
    max_new_tokens: int = 50
    processing_delay_s: float = 0.0
    """Extra fixed delay added to every analysis: simulates a slower robot computer (tests, demos)."""
    default_task: str = DEFAULT_TASK
    heartbeat_period_s: float = 0.5
    diagnostics_period_s: float = 1.0
    bundle_check_period_s: float = 5.0
    """how often the node looks (stat only) for a bundle swapped in at `bundle` and loads it; 0 = never"""
    camera_silence_warn_s: float = 10.0
    """a camera topic with no frame this long (no publisher, or none of its frames arrive) is a warning and
    /diagnostics WARN; 0 = never (a robot analysing only through its AnalyzeImage service)"""


@dataclass(frozen=True)
class CostWeights:
    """Weights of a robot's bid cost for a step (lower cost wins)."""

    suitability: float = 1.0
    """times (1 - fused score of the robot's type)"""
    type_mismatch: float = 1.0
    """added when the robot's type is not the step's type"""
    battery: float = 0.5
    """times (1 - battery)"""
    load: float = 0.25
    """times the number of steps the robot already holds"""


@dataclass(frozen=True)
class ManagerConfig:
    """The fleet manager's thresholds."""

    heartbeat_timeout_s: float = 3.0
    fusion_window_s: float = 10.0
    low_battery: float = 0.2
    battery_hysteresis: float = 0.05
    """a robot that fell under low_battery takes steps again at low_battery + this (battery noise
    at the threshold moves its steps once, not on every heartbeat)"""
    selection_threshold: float = 0.5
    max_robot_types: int = 3
    task_wait_s: float = 10.0
    """how long a task waits for a first incident report with a robot selection"""
    share_window_s: float = 30.0
    """a step the first robot back took from pending this recently is bid for again (once) when
    another robot becomes eligible: after a type-wide outage the steps that waited spread; 0 = never"""
    forget_after_s: float = 3600.0
    """a robot not in the fleet's list that is offline this long is forgotten, its endpoints
    destroyed (robots coming and going under new names do not pile up); 0 = never"""
    text_selector: bool = True
    """decide an operator task's robot types with the bundle's text robot selector (the robots'
    rule for text tasks); false: always from the fused camera reports"""
    bundle_check_period_s: float = 5.0
    """how often the manager looks (stat only) for a bundle swapped in and loads its text robot
    selector; 0 = never (the /fleet/reload_model service still loads it)"""
    clock_skew_warn_s: float = 2.0
    """a robot whose clock (estimated from its heartbeats' stamps) is further than this off the
    manager's gets a warning and a clock_skew alert (its reports are fused on corrected stamps)"""
    weights: CostWeights = field(default_factory=CostWeights)


@dataclass(frozen=True)
class CameraConfig:
    """Replay cameras for the embedded default and demos (real robots run their camera drivers)."""

    enabled: bool = False
    images: str = ""
    video: str = ""
    rate_hz: float = 1.0
    format: str = "raw"
    """raw (sensor_msgs/Image) or jpeg (sensor_msgs/CompressedImage)"""
    loop: bool = True


@dataclass(frozen=True)
class RespawnConfig:
    """Restart a node's process when it fails (exits non-zero) while the fleet runs (fleet-wide, overridable per
    robot). `ember-fleet --mode processes` and launch_ros's Node(respawn=, respawn_delay=) do it."""

    enabled: bool = False
    delay_s: float = 2.0
    """wait this long before starting the node again"""
    max_restarts: int = 5
    """most restarts within window_s; one more exit and ember-fleet gives up on the node (launch:
    respawn_max_retries, counted over the whole run)"""
    window_s: float = 60.0


@dataclass(frozen=True)
class RobotConfig:
    """One robot of the fleet."""

    id: str
    type: str
    camera_topic: str = "camera/image_raw"
    compressed_topic: str = "camera/image_raw/compressed"
    """default: <camera_topic>/compressed"""
    battery: float = 1.0
    """initial simulated battery (a `battery` parameter, settable at run time)"""
    camera: bool = True
    """start a replay camera for this robot when cameras.enabled"""
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    respawn: RespawnConfig = field(default_factory=RespawnConfig)
    """for its incident node and camera (default: the fleet-wide respawn)"""


@dataclass(frozen=True)
class NodeDescription:
    """One node to run: what launch_ros.actions.Node gets, plus the module for `python -m`."""

    package: str
    executable: str
    name: str
    namespace: str
    parameters: dict[str, Any]
    remappings: tuple[tuple[str, str], ...] = ()
    module: str = ""
    respawn: RespawnConfig = field(default_factory=RespawnConfig)

    @property
    def fqn(self) -> str:
        """Fully qualified node name, e.g. /drone_1/incident_node."""
        return f"{self.namespace.rstrip('/')}/{self.name}" if self.namespace else f"/{self.name}"

    def params_file_text(self) -> str:
        """The node's parameters as a `--params-file` YAML (`<fqn>: {ros__parameters: ...}`).

        A YAML dump keeps every value's type: a robot id `yes` or a topic `on` stays a string
        (quoted), which `-p name:=value` or launch_ros's parameter dicts would read as a bool."""
        return yaml.safe_dump({self.fqn: {"ros__parameters": dict(self.parameters)}}, sort_keys=True)

    def write_params_file(self, directory: Path, index: int) -> Path:
        """Write params_file_text() to `<directory>/<index>_<fqn>.yaml` (index: the node's place
        among those started, so names never collide); returns the path."""
        path = directory / f"{index:03d}_{self.fqn.strip('/').replace('/', '_')}.yaml"
        path.write_text(self.params_file_text())
        return path

    def launch_kwargs(self, params_file: str, respawn_max_retries: bool = False) -> dict[str, Any]:
        """Keyword arguments for launch_ros.actions.Node, its parameters in `params_file`
        (written by write_params_file): launch_ros re-reads every string of a parameter dict
        as YAML, so `yes`, `on`, `1` or `null` would reach the node as bool, int or ''.
        `respawn_max_retries`: the installed launch takes that keyword (Jazzy and later)."""
        kwargs = {
            "package": self.package,
            "executable": self.executable,
            "name": self.name,
            "namespace": self.namespace,
            "parameters": [params_file],
            "remappings": [tuple(r) for r in self.remappings],
            "output": "screen",
            "respawn": self.respawn.enabled,
            "respawn_delay": self.respawn.delay_s,
        }
        if respawn_max_retries:
            kwargs["respawn_max_retries"] = self.respawn.max_restarts
        return kwargs

    def comparable(self) -> dict[str, Any]:
        """The fields both front ends must agree on, in plain types."""
        return {
            "package": self.package,
            "executable": self.executable,
            "name": self.name,
            "namespace": self.namespace,
            "parameters": dict(sorted(self.parameters.items())),
            "remappings": [list(r) for r in self.remappings],
            "respawn": dataclasses.asdict(self.respawn),
        }


@dataclass(frozen=True)
class FleetConfig:
    """The whole fleet as config/fleet.yaml describes it."""

    bundle: str
    robots: tuple[RobotConfig, ...]
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    manager: ManagerConfig = field(default_factory=ManagerConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    respawn: RespawnConfig = field(default_factory=RespawnConfig)
    """fleet-wide: the manager's, and each robot's unless it sets its own"""
    dds_profile: str = ""
    """Fast DDS XML profile for FASTDDS_DEFAULT_PROFILES_FILE ('' = none)"""
    discovery_server: str = ""
    """Fast DDS discovery server(s) for ROS_DISCOVERY_SERVER ('' = multicast discovery)"""
    path: str = ""

    def robot(self, robot_id: str) -> RobotConfig:
        """The robot with this id; KeyError if none."""
        for r in self.robots:
            if r.id == robot_id:
                return r
        raise KeyError(robot_id)

    def missing_paths(self, nodes: list[NodeDescription]) -> list[str]:
        """The files that `nodes` (some of node_descriptions()) need and that are not there: the
        bundle directory (incident nodes) and the replay cameras' images/video, each as
        '<key> <path>'. Empty when they can start. (A missing dds_profile is an error of load;
        the manager runs without the bundle's text selector, with a warning.)"""
        executables = {d.executable for d in nodes}
        wanted = [("bundle", self.bundle, Path.is_dir)] if "incident_node" in executables else []
        if "ember-camera" in executables:
            wanted += [("cameras.images", self.cameras.images, Path.is_dir), ("cameras.video", self.cameras.video, Path.is_file)]
        return [f"{key} {path}" for key, path, exists in wanted if path and not exists(Path(path))]

    def node_descriptions(self) -> list[NodeDescription]:
        """Every node of the fleet: the manager, one incident node per robot, replay cameras."""
        nodes = [manager_description(self)]
        for robot in self.robots:
            nodes.append(incident_node_description(self, robot))
            if self.cameras.enabled and robot.camera:
                nodes.append(camera_description(self, robot))
        return nodes


def dds_environment(cfg: FleetConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables the fleet's processes need: the config's Fast DDS profile and
    discovery server(s), each unless the environment already sets it."""
    env = os.environ if environ is None else environ
    wanted = {DDS_PROFILE_ENV: cfg.dds_profile, DISCOVERY_SERVER_ENV: cfg.discovery_server}
    return {name: value for name, value in wanted.items() if value and not env.get(name)}


def check_discovery_server(value: str, where: str) -> str:
    """A ROS_DISCOVERY_SERVER value: ';'-separated `host[:port]` entries (an entry's position is
    its server id; empty entries allowed, e.g. ';10.0.0.2:11811'), IPv6 in brackets."""
    entries = value.split(";")
    if not any(e.strip() for e in entries):
        raise FleetConfigError(f"{where}: names no server (expected host:port, e.g. 10.0.0.1:11811)")
    for entry in entries:
        m = _DISCOVERY_ENTRY.match(entry.strip()) if entry.strip() else None
        if entry.strip() and (m is None or (m[2] is not None and not 0 < int(m[2]) < 65536)):
            raise FleetConfigError(
                f"{where}: {entry.strip()!r} is not host[:port] (e.g. 10.0.0.1:11811, base-station:11811, "
                "[fd00::1]:11811); several servers are separated by ';'"
            )
    return ";".join(e.strip() for e in entries)


def manager_description(cfg: FleetConfig) -> NodeDescription:
    """The fleet manager node."""
    m = cfg.manager
    params: dict[str, Any] = {
        "heartbeat_timeout_s": float(m.heartbeat_timeout_s),
        "fusion_window_s": float(m.fusion_window_s),
        "low_battery": float(m.low_battery),
        "battery_hysteresis": float(m.battery_hysteresis),
        "selection_threshold": float(m.selection_threshold),
        "max_robot_types": int(m.max_robot_types),
        "task_wait_s": float(m.task_wait_s),
        "forget_after_s": float(m.forget_after_s),
        "share_window_s": float(m.share_window_s),
        "clock_skew_warn_s": float(m.clock_skew_warn_s),
        "bundle_check_period_s": float(m.bundle_check_period_s),
        "bundle": cfg.bundle if m.text_selector else "",
        "weight_suitability": float(m.weights.suitability),
        "weight_type_mismatch": float(m.weights.type_mismatch),
        "weight_battery": float(m.weights.battery),
        "weight_load": float(m.weights.load),
        "robot_ids": [r.id for r in cfg.robots],
    }
    return NodeDescription(
        PACKAGE, "fleet_manager", MANAGER_NAME, "", params, (), "ember.ros.fleet_manager", cfg.respawn
    )


def incident_node_description(cfg: FleetConfig, robot: RobotConfig) -> NodeDescription:
    """The incident node of one robot, in namespace /<robot_id>."""
    inf = robot.inference
    params: dict[str, Any] = {
        "robot_id": robot.id,
        "robot_type": robot.type,
        "bundle": cfg.bundle,
        "default_task": inf.default_task,
        "threads": int(inf.threads),
        "max_rate_hz": float(inf.max_rate_hz),
        "max_new_tokens": int(inf.max_new_tokens),
        "processing_delay_s": float(inf.processing_delay_s),
        "heartbeat_period_s": float(inf.heartbeat_period_s),
        "diagnostics_period_s": float(inf.diagnostics_period_s),
        "bundle_check_period_s": float(inf.bundle_check_period_s),
        "camera_silence_warn_s": float(inf.camera_silence_warn_s),
        "battery": float(robot.battery),
        "image_topic": robot.camera_topic,
        "compressed_topic": robot.compressed_topic,
    }
    return NodeDescription(
        PACKAGE, "incident_node", INCIDENT_NODE_NAME, f"/{robot.id}", params, (), "ember.ros.incident_node",
        robot.respawn,
    )


def camera_description(cfg: FleetConfig, robot: RobotConfig) -> NodeDescription:
    """A replay camera publishing into the robot's camera topic."""
    cam = cfg.cameras
    topic = robot.compressed_topic if cam.format == "jpeg" else robot.camera_topic
    params: dict[str, Any] = {
        "images": cam.images,
        "video": cam.video,
        "rate_hz": float(cam.rate_hz),
        "topic": topic,
        "format": cam.format,
        "frame_id": f"{robot.id}/camera",
        "loop": bool(cam.loop),
    }
    return NodeDescription(
        PACKAGE, "ember-camera", CAMERA_NODE_NAME, f"/{robot.id}", params, (), "ember.ros.camera", robot.respawn
    )


# ---------------------------------------------------------------------------------------------
# loading

_TOP_KEYS = {"bundle", "robots", "inference", "manager", "cameras", "respawn", "dds_profile", "discovery_server"}
DDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def _check_keys(data: Any, cls: type, where: str, extra: set[str] | None = None) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FleetConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)} | (extra or set())
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise FleetConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return data


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check and coerce a scalar to the dataclass field type (bool is not a number)."""
    if typ in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FleetConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise FleetConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if typ in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise FleetConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ in (bool, "bool"):
        if not isinstance(value, bool):
            raise FleetConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if typ in (str, "str"):
        if not isinstance(value, str):
            raise FleetConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(typ)


def _scalars(cls: type, data: dict, where: str, base: Any = None) -> Any:
    """Build dataclass `cls` from the scalar entries of `data` (over `base`)."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data and f.type in (float, int, bool, str, "float", "int", "bool", "str"):
            values[f.name] = _coerce(data[f.name], f.type, f"{where}.{f.name}")
    obj = base if base is not None else cls()
    return dataclasses.replace(obj, **values)


def _non_negative(obj: Any, where: str, names: tuple[str, ...]) -> None:
    for n in names:
        if getattr(obj, n) < 0:
            raise FleetConfigError(f"{where}.{n}: must be >= 0, got {getattr(obj, n)}")


def check_manager(manager: ManagerConfig, where: str) -> None:
    """The fleet manager's settings are usable (from fleet.yaml, or its own ROS parameters)."""
    w = manager.weights
    for name, value in [*vars(manager).items(), *((f"weights.{k}", v) for k, v in vars(w).items())]:
        if isinstance(value, float) and not math.isfinite(value):
            raise FleetConfigError(f"{where}.{name}: expected a finite number, got {value}")
    _non_negative(w, f"{where}.weights", ("suitability", "type_mismatch", "battery", "load"))
    _non_negative(manager, where, ("fusion_window_s", "task_wait_s", "forget_after_s", "battery_hysteresis",
                                   "share_window_s", "bundle_check_period_s"))
    for n in ("heartbeat_timeout_s", "clock_skew_warn_s"):
        if getattr(manager, n) <= 0:
            raise FleetConfigError(f"{where}.{n}: must be > 0, got {getattr(manager, n)}")
    for n in ("low_battery", "selection_threshold"):
        if not 0.0 <= getattr(manager, n) <= 1.0:
            raise FleetConfigError(f"{where}.{n}: must be within 0..1, got {getattr(manager, n)}")
    if manager.max_robot_types < 1:
        raise FleetConfigError(f"{where}.max_robot_types: must be >= 1")


def _resolve_path(value: str, base_dir: Path) -> str:
    if not value:
        return ""
    p = Path(os.path.expanduser(os.path.expandvars(value)))
    if not p.is_absolute():
        p = base_dir / p
    return os.path.abspath(p)  # a symlink stays one: `current -> releases/v4` is followed when it flips


def _inference(data: Any, where: str, base: InferenceConfig) -> InferenceConfig:
    inf = _scalars(InferenceConfig, _check_keys(data, InferenceConfig, where), where, base)
    _non_negative(inf, where, ("max_rate_hz", "processing_delay_s", "bundle_check_period_s", "camera_silence_warn_s"))
    if inf.threads < 1:
        raise FleetConfigError(f"{where}.threads: must be >= 1, got {inf.threads}")
    if inf.max_new_tokens < 1:
        raise FleetConfigError(f"{where}.max_new_tokens: must be >= 1, got {inf.max_new_tokens}")
    for n in ("heartbeat_period_s", "diagnostics_period_s"):
        if getattr(inf, n) <= 0:
            raise FleetConfigError(f"{where}.{n}: must be > 0")
    return inf


def _respawn(data: Any, where: str, base: RespawnConfig) -> RespawnConfig:
    """A `respawn` entry over `base`: true/false (turn it on/off) or a mapping of RespawnConfig's keys."""
    if data is None:
        return base
    if isinstance(data, bool):
        return dataclasses.replace(base, enabled=data)
    if not isinstance(data, dict):
        keys = ", ".join(f.name for f in dataclasses.fields(RespawnConfig))
        raise FleetConfigError(f"{where}: expected true, false or a mapping of {keys}, got {data!r}")
    respawn = _scalars(RespawnConfig, _check_keys(data, RespawnConfig, where), where, base)
    _non_negative(respawn, where, ("delay_s",))
    if respawn.max_restarts < 1:
        raise FleetConfigError(f"{where}.max_restarts: must be >= 1, got {respawn.max_restarts}")
    if respawn.window_s <= 0:
        raise FleetConfigError(f"{where}.window_s: must be > 0, got {respawn.window_s:g}")
    return respawn


def load_dict(data: Any, base_dir: Path | str = ".", source: str = "<dict>", bundle: str | None = None) -> FleetConfig:
    """Build a FleetConfig from parsed YAML; relative paths resolve against `base_dir`."""
    base = Path(base_dir)
    where = source
    if not isinstance(data, dict):
        raise FleetConfigError(f"{where}: expected a mapping with bundle, robots, ... at the top")
    top = data
    unknown = sorted(set(map(str, top)) - _TOP_KEYS)
    if unknown:
        raise FleetConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    if bundle is None:
        if "bundle" not in top:
            raise FleetConfigError(f"{where}: missing key 'bundle' (the model bundle directory)")
        bundle = _resolve_path(_coerce(top["bundle"], str, f"{where}.bundle"), base)
    else:
        bundle = os.path.abspath(Path(bundle).expanduser())

    inference = _inference(top.get("inference"), f"{where}.inference", InferenceConfig())
    respawn = _respawn(top.get("respawn"), f"{where}.respawn", RespawnConfig())

    mdata = _check_keys(top.get("manager"), ManagerConfig, f"{where}.manager")
    manager = _scalars(ManagerConfig, mdata, f"{where}.manager")
    wdata = _check_keys(mdata.get("weights"), CostWeights, f"{where}.manager.weights")
    weights = _scalars(CostWeights, wdata, f"{where}.manager.weights")
    manager = dataclasses.replace(manager, weights=weights)
    check_manager(manager, f"{where}.manager")

    cdata = _check_keys(top.get("cameras"), CameraConfig, f"{where}.cameras")
    cameras = _scalars(CameraConfig, cdata, f"{where}.cameras")
    if cameras.format not in ("raw", "jpeg"):
        raise FleetConfigError(f"{where}.cameras.format: expected raw or jpeg, got {cameras.format!r}")
    if cameras.rate_hz <= 0:
        raise FleetConfigError(f"{where}.cameras.rate_hz: must be > 0")
    cameras = dataclasses.replace(
        cameras, images=_resolve_path(cameras.images, base), video=_resolve_path(cameras.video, base)
    )
    if cameras.enabled and bool(cameras.images) == bool(cameras.video):
        raise FleetConfigError(f"{where}.cameras: give exactly one of images (a directory) or video (a file)")

    dds_profile = _resolve_path(_coerce(top.get("dds_profile", ""), str, f"{where}.dds_profile"), base)
    if dds_profile and not Path(dds_profile).is_file():
        raise FleetConfigError(f"{where}.dds_profile: {dds_profile} does not exist")
    discovery_server = _coerce(top.get("discovery_server", ""), str, f"{where}.discovery_server").strip()
    if discovery_server:
        discovery_server = check_discovery_server(discovery_server, f"{where}.discovery_server")

    rdata = top.get("robots")
    if not isinstance(rdata, list) or not rdata:
        raise FleetConfigError(f"{where}.robots: expected a non-empty list of robots")
    robots: list[RobotConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(rdata):
        rw = f"{where}.robots[{i}]"
        entry = _check_keys(entry, RobotConfig, rw)
        for req in ("id", "type"):
            if req not in entry:
                raise FleetConfigError(f"{rw}: missing key {req!r}")
        rid = _coerce(entry["id"], str, f"{rw}.id")
        if not ROBOT_ID_RE.match(rid):
            raise FleetConfigError(
                f"{rw}.id: {rid!r} is not a valid robot id (letters, digits, underscores; starting with a letter)"
            )
        if rid in seen:
            raise FleetConfigError(f"{rw}.id: duplicate robot id {rid!r} (also robots[{seen[rid]}])")
        seen[rid] = i
        rtype = _coerce(entry["type"], str, f"{rw}.type")
        if rtype not in ROBOT_TYPES:
            raise FleetConfigError(f"{rw}.type: unknown robot type {rtype!r}; expected one of {', '.join(ROBOT_TYPES)}")
        robot = _scalars(RobotConfig, entry, rw, RobotConfig(id=rid, type=rtype))
        if "compressed_topic" not in entry:  # image_transport's name for the camera's compressed stream
            robot = dataclasses.replace(robot, compressed_topic=f"{robot.camera_topic}/compressed")
        if not 0.0 <= robot.battery <= 1.0:
            raise FleetConfigError(f"{rw}.battery: must be within 0..1, got {robot.battery}")
        for n in ("camera_topic", "compressed_topic"):
            if not getattr(robot, n):
                raise FleetConfigError(f"{rw}.{n}: must not be empty")
        robot = dataclasses.replace(
            robot,
            inference=_inference(entry.get("inference"), f"{rw}.inference", inference),
            respawn=_respawn(entry.get("respawn"), f"{rw}.respawn", respawn),
        )
        robots.append(robot)
    return FleetConfig(
        bundle=bundle,
        robots=tuple(robots),
        inference=inference,
        manager=manager,
        cameras=cameras,
        respawn=respawn,
        dds_profile=dds_profile,
        discovery_server=discovery_server,
        path=source,
    )


def load(path: str | Path, bundle: str | None = None) -> FleetConfig:
    """Load config/fleet.yaml (or another fleet file); `bundle` overrides the file's bundle."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FleetConfigError(f"fleet config {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise FleetConfigError(f"{p}: not valid YAML: {exc}") from None
    return load_dict(data, p.resolve().parent, str(p), bundle=bundle)
