"""A stand-in robot whose clock is off (tests only): `python -m tests.fleet.skewed_robot --ros-args ...`.

It heartbeats on /fleet/status and stamps its reports with the system clock plus `skew_s` (a
Raspberry Pi without a real-time clock before NTP synced it), as an incident node on that robot
would stamp them. READY once the fleet manager subscribes to its heartbeats and reports; setting
its `report` parameter to true (`set_parameter`) publishes one IncidentAnalysis + RobotSelection
pair of the image it "sees" now.
"""

from __future__ import annotations

from typing import Any

from builtin_interfaces.msg import Time
from ember_msgs.msg import IncidentAnalysis, RobotSelection, RobotStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node

from ember.labels import ROBOT_TYPES
from ember.ros import runtime
from ember.ros.qos import REPORT_QOS, STATUS_QOS
from ember.ros.spinning import exit_now, print_ready, spin_nodes


class SkewedRobot(Node):
    """Heartbeats and, on request, one report, stamped on a clock `skew_s` off the system clock."""

    def __init__(self) -> None:
        super().__init__("skewed_robot")
        self.robot_id = str(self.declare_parameter("robot_id", "robot_1").value)
        self.robot_type = str(self.declare_parameter("robot_type", "drone").value)
        self.skew = float(self.declare_parameter("skew_s", 0.0).value)
        self.label = str(self.declare_parameter("label", "on fire").value)
        self.scores = [float(s) for s in self.declare_parameter("scores", [0.9, 0.7, 0.1, 0.2, 0.0]).value]
        self.declare_parameter("report", False)
        period = float(self.declare_parameter("heartbeat_period_s", 0.1).value)
        self._status = self.create_publisher(RobotStatus, "/fleet/status", STATUS_QOS)
        self._inc = self.create_publisher(IncidentAnalysis, "ember/incident", REPORT_QOS)
        self._sel = self.create_publisher(RobotSelection, "ember/robot_selection", REPORT_QOS)
        self._ready = False
        self.add_on_set_parameters_callback(self._on_set)
        self.create_timer(period, self._beat)

    def _now(self) -> Time:
        """The robot's clock: the system clock plus skew_s."""
        ns = self.get_clock().now().nanoseconds + round(self.skew * 1e9)
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def _beat(self) -> None:
        msg = RobotStatus(robot_id=self.robot_id, robot_type=self.robot_type, available=True, battery=1.0)
        msg.header.stamp = self._now()
        self._status.publish(msg)
        pubs = (self._status, self._inc, self._sel)
        if not self._ready and all(p.get_subscription_count() > 0 for p in pubs):
            self._ready = True
            print_ready()

    def _on_set(self, params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name == "report" and p.value:
                self._publish_report()
        return SetParametersResult(successful=True)

    def _publish_report(self) -> None:
        inc = IncidentAnalysis(robot_id=self.robot_id, incident_type=self.label, confidence=0.8, place="street")
        inc.header.stamp, inc.header.frame_id = self._now(), f"{self.robot_id}/camera"
        inc.labels, inc.scores = [self.label], [0.8]
        sel = RobotSelection(robot_id=self.robot_id, confidence=0.8, scores=self.scores)
        sel.header = inc.header
        sel.robot_types = [t for t, s in zip(ROBOT_TYPES, self.scores, strict=True) if s >= 0.5]
        self._inc.publish(inc)
        self._sel.publish(sel)


def main() -> None:
    with runtime.stop_request():
        runtime.init()
        node = SkewedRobot()
        try:
            spin_nodes([node], multi_threaded=False)
        finally:
            node.destroy_node()
            runtime.shutdown()
    exit_now(0)


if __name__ == "__main__":
    main()
