"""Helpers for tests that drive Ember nodes as a ROS user would: a simulation clock on /clock,
parameter changes over the SetParameters service, heartbeats on /fleet/status."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builtin_interfaces.msg import Time
from ember_msgs.msg import RobotStatus
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import ListParameters, SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from ember.ros.qos import STATUS_QOS
from tests.fleet.helpers import Proc, node_process, write_params  # noqa: F401 - node_process: imported from here
from tests.ros.helpers import spin_until

RCLPY_OWN_PARAMETERS = {"use_sim_time", "start_type_description_service"}
"""Parameters every rclpy node declares by itself."""


def time_msg(seconds: float) -> Time:
    """builtin_interfaces/Time of `seconds`."""
    ns = round(seconds * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_s(stamp: Any) -> float:
    """Seconds of a builtin_interfaces/Time."""
    return stamp.sec + stamp.nanosec * 1e-9


class SimClock:
    """The test's simulator: publishes /clock at `now` on every spin (a paused simulation keeps
    publishing the same time, as Gazebo does); `now` is set or advanced by the test."""

    def __init__(self, node, executor, start: float) -> None:
        self.node, self.executor, self.now = node, executor, float(start)
        self.pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))

    def wait_for_subscribers(self, count: int = 1, timeout: float = 30.0) -> None:
        assert spin_until(self.executor, lambda: self.pub.get_subscription_count() >= count, timeout), "no /clock subscriber"

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 15.0, step: float = 0.0) -> bool:
        """Publish the clock (advancing it by `step` each time) while spinning until `predicate`."""

        def tick() -> bool:
            self.pub.publish(Clock(clock=time_msg(self.now)))
            self.now += step
            return predicate()

        return spin_until(self.executor, tick, timeout)


class Heartbeats:
    """RobotStatus messages on /fleet/status, per robot."""

    def __init__(self, node) -> None:
        self.by_robot: dict[str, list[RobotStatus]] = {}
        node.create_subscription(RobotStatus, "/fleet/status", self._on, STATUS_QOS)

    def _on(self, msg: RobotStatus) -> None:
        self.by_robot.setdefault(msg.robot_id, []).append(msg)

    def of(self, robot_id: str) -> list[RobotStatus]:
        return self.by_robot.get(robot_id, [])


def try_set_parameter(node, executor, target_node: str, name: str, value: Any, timeout: float = 20.0) -> SetParametersResult:
    """Set one parameter of a running node as `ros2 param set` does; the node's answer."""
    client = node.create_client(SetParameters, f"{target_node}/set_parameters")
    try:
        assert spin_until(executor, client.service_is_ready, timeout), f"{target_node}/set_parameters not available"
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
        assert spin_until(executor, future.done, timeout), "set_parameters did not answer"
        return future.result().results[0]
    finally:
        node.destroy_client(client)


def list_parameters(node, executor, target_node: str, timeout: float = 20.0) -> set[str]:
    """Names of every parameter a running node declared."""
    client = node.create_client(ListParameters, f"{target_node}/list_parameters")
    try:
        assert spin_until(executor, client.service_is_ready, timeout), f"{target_node}/list_parameters not available"
        future = client.call_async(ListParameters.Request())
        assert spin_until(executor, future.done, timeout), "list_parameters did not answer"
        return set(future.result().result.names)
    finally:
        node.destroy_client(client)


def startup_refusal(module: str, fqn: str, params: dict[str, Any], workdir: Path, timeout: float = 90.0) -> tuple[int | None, str]:
    """Start a node with these parameters; (exit code, output) if it refused to start, (None, output)
    if it came up (then it is stopped)."""
    ns, _, name = fqn.rpartition("/")
    pf = write_params(workdir / f"{name}_bad_params.yaml", fqn, params)
    proc = Proc(["-m", module, "--ros-args", "-r", f"__ns:={ns or '/'}", "-r", f"__node:={name}", "--params-file", str(pf)])
    try:
        proc.wait_for_line(r"^READY$", timeout=timeout)
    except RuntimeError:
        if proc.proc.poll() is None:  # neither READY nor an exit within the timeout
            proc.stop()
            return None, proc.output()
        proc.stop()
        return proc.proc.returncode, proc.output()
    proc.stop()
    return None, proc.output()


def sim_time_jpeg_camera(fqn: str, rate_hz: float, images: Path, workdir: Path) -> contextlib.AbstractContextManager[Proc]:
    """ember-camera as node `fqn` replaying `images` as JPEG at `rate_hz` of simulated time (use_sim_time)."""
    params = {"images": str(images), "rate_hz": rate_hz, "topic": "camera/image_raw/compressed", "format": "jpeg",
              "use_sim_time": True}
    return node_process("ember.ros.camera", fqn, params, workdir)
