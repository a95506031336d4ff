"""Simulated robots for scale tests and benchmarks of the fleet manager.

`SimulatedRobots` is one node standing in for N robots: it publishes each robot's
RobotStatus heartbeat on /fleet/status at `rate_hz` (spread over 20 ticks a second, as N
independent robots would be), records the ActionPlans addressed to each robot on
/<robot_id>/ember/action_plan, and can publish an IncidentAnalysis + RobotSelection pair as
if one robot's model had seen an incident. Robots can be stopped (heartbeats end, as when
a robot dies) or have their battery changed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from builtin_interfaces.msg import Time
from ember_msgs.msg import ActionPlan, IncidentAnalysis, RobotSelection, RobotStatus
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node

from ember.labels import ROBOT_TYPES
from ember.ros.qos import PLAN_QOS, REPORT_QOS, STATUS_QOS

TICKS_PER_SECOND = 20
MAX_PLAN_HISTORY = 5000
"""plans recorded per robot (the oldest go first): a long run keeps a bounded record"""


@dataclass
class SimRobot:
    """One simulated robot."""

    robot_id: str
    robot_type: str
    battery: float = 1.0
    alive: bool = True
    plans: deque[tuple[float, ActionPlan]] = field(default_factory=lambda: deque(maxlen=MAX_PLAN_HISTORY))
    """(time.monotonic() on arrival, plan) in arrival order, the latest MAX_PLAN_HISTORY"""
    open_plans: dict[str, ActionPlan] = field(default_factory=dict)
    """plan_id -> latest plan, for plans not cancelled (as an incident node holds them)"""

    def receive(self, plan: ActionPlan) -> None:
        """Record a plan addressed to this robot."""
        self.plans.append((time.monotonic(), plan))
        if plan.status == ActionPlan.STATUS_CANCELLED:
            self.open_plans.pop(plan.plan_id, None)
        else:
            self.open_plans[plan.plan_id] = plan

    @property
    def current_plan_id(self) -> str:
        """The plan its heartbeat names: the newest open one, as IncidentNode does ('' if none)."""
        return next(reversed(self.open_plans), "")

    def latest_plans(self) -> dict[str, ActionPlan]:
        """plan_id -> the latest plan of that id (among the recorded ones)."""
        out: dict[str, ActionPlan] = {}
        for _, p in self.plans:
            out[p.plan_id] = p
        return out


class SimulatedRobots(Node):
    """N simulated robots in one node."""

    def __init__(
        self, count: int, rate_hz: float = 2.0, prefix: str = "sim", node_name: str = "simulated_robots", **kwargs: Any
    ) -> None:
        super().__init__(node_name, **kwargs)
        self.robots: dict[str, SimRobot] = {}
        self._status_pub = self.create_publisher(RobotStatus, "/fleet/status", STATUS_QOS)
        self._report_pubs: dict[str, tuple[Any, Any]] = {}
        self.heartbeats_sent = 0
        for i in range(count):
            rid = f"{prefix}_{i:03d}"
            robot = SimRobot(rid, ROBOT_TYPES[i % len(ROBOT_TYPES)])
            self.robots[rid] = robot
            self.create_subscription(
                ActionPlan,
                f"/{rid}/ember/action_plan",
                robot.receive,
                PLAN_QOS,
                event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
            )
        self._order = list(self.robots)
        self._period_ticks = max(1, round(TICKS_PER_SECOND / rate_hz))
        self._tick = 0
        self.create_timer(1.0 / TICKS_PER_SECOND, self._on_tick)

    def _on_tick(self) -> None:
        """Each tick publishes the heartbeats of 1/period of the robots."""
        slot = self._tick % self._period_ticks
        self._tick += 1
        now = self.get_clock().now().to_msg()
        for i in range(slot, len(self._order), self._period_ticks):
            robot = self.robots[self._order[i]]
            if not robot.alive:
                continue
            msg = RobotStatus()
            msg.header.stamp = now
            msg.robot_id = robot.robot_id
            msg.robot_type = robot.robot_type
            msg.available = True
            msg.battery = float(robot.battery)
            msg.current_plan_id = robot.current_plan_id
            self._status_pub.publish(msg)
            self.heartbeats_sent += 1

    def add_reporter(self, robot_id: str) -> None:
        """Create the report publishers of `robot_id` (wait for `report_publishers_matched` before
        publishing: reports are volatile, a message sent before matching is not delivered)."""
        if robot_id not in self._report_pubs:
            self._report_pubs[robot_id] = (
                self.create_publisher(IncidentAnalysis, f"/{robot_id}/ember/incident", REPORT_QOS),
                self.create_publisher(RobotSelection, f"/{robot_id}/ember/robot_selection", REPORT_QOS),
            )

    def publish_report(
        self, robot_id: str, incident_type: str, scores: list[float], confidence: float = 0.8, place: str = "street",
        zero_stamp: bool = False,
    ) -> Any:
        """Publish an IncidentAnalysis + RobotSelection from `robot_id` (same stamp: now, or zero as
        a camera that leaves stamps zero gives them); returns the stamp."""
        self.add_reporter(robot_id)
        inc_pub, sel_pub = self._report_pubs[robot_id]
        stamp = Time() if zero_stamp else self.get_clock().now().to_msg()
        inc = IncidentAnalysis()
        inc.header.stamp, inc.header.frame_id = stamp, f"{robot_id}/camera"
        inc.robot_id, inc.incident_type, inc.confidence, inc.place = robot_id, incident_type, confidence, place
        inc.labels, inc.scores = [incident_type], [confidence]
        sel = RobotSelection()
        sel.header = inc.header
        sel.robot_id, sel.scores, sel.confidence = robot_id, [float(s) for s in scores], confidence
        sel.robot_types = [ROBOT_TYPES[i] for i in sorted(range(len(scores)), key=lambda i: -scores[i]) if scores[i] >= 0.5]
        inc_pub.publish(inc)
        sel_pub.publish(sel)
        return stamp

    def report_publishers_matched(self) -> bool:
        """True once every report publisher has a subscriber (the fleet manager)."""
        return all(a.get_subscription_count() > 0 and b.get_subscription_count() > 0 for a, b in self._report_pubs.values())

    def plans_for(self, plan_ids: list[str]) -> dict[str, ActionPlan]:
        """The latest received plan for each of `plan_ids` that arrived."""
        out: dict[str, ActionPlan] = {}
        for r in self.robots.values():
            for pid, p in r.latest_plans().items():
                if pid in plan_ids:
                    out[pid] = p
        return out
