"""The fleet manager under `use_sim_time:=true` with a paused simulation: robots' heartbeats keep
their wall-time period (the incident node's are on a steady clock), so the manager's liveness check
and /diagnostics must run in wall time too, or a paused Gazebo freezes them: no robot ever shown
online, and a robot whose process died never goes offline until the simulation runs again."""

from __future__ import annotations

import pytest
from ember_msgs.msg import RobotStatus
from std_msgs.msg import Header

from ember.ros.qos import STATUS_QOS
from tests.fleet.helpers import Diagnostics, fleet_manager_process
from tests.ros.helpers import ros_node
from tests.ros.node_helpers import SimClock, time_msg

pytestmark = pytest.mark.ros
MDIAG = "ember/fleet_manager"


def test_a_paused_simulation_does_not_freeze_the_managers_liveness_check(tmp_path):
    params = {"heartbeat_timeout_s": 1.0, "diagnostics_period_s": 0.2, "check_period_s": 0.1, "use_sim_time": True}
    with fleet_manager_process(tmp_path, params) as manager, ros_node("paused_sim_robot") as (node, executor):
        clock = SimClock(node, executor, start=42.0)
        diag = Diagnostics(node)
        status = node.create_publisher(RobotStatus, "/fleet/status", STATUS_QOS)
        clock.wait_for_subscribers()
        alive = True

        def beat_until(predicate) -> bool:
            def tick() -> bool:
                if alive:
                    header = Header(stamp=time_msg(clock.now), frame_id="sim_r1")
                    status.publish(RobotStatus(header=header, robot_id="sim_r1", robot_type="drone", available=True, battery=1.0))
                return predicate()

            return clock.spin_until(tick, 10)

        assert beat_until(lambda: diag.get(MDIAG, "robots_online") == 1), manager.output()
        alive = False  # the robot's process dies while the simulation is paused
        assert beat_until(lambda: diag.get(MDIAG, "robots_online") == 0), manager.output()
