"""`ember-task watch` prints the fleet manager's robot alerts (clock_skew) naming the robot (the
manager and a robot whose clock is 10 minutes behind, own processes, real DDS, the real ember-task)."""

from __future__ import annotations

import json

import pytest
from std_msgs.msg import String

from ember.ros.qos import LATCHED_QOS
from tests.fleet.helpers import fleet_manager_process, node_process
from tests.fleet.test_operator_cli import run_task
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
PARAMS = {"heartbeat_timeout_s": 3.0, "clock_skew_warn_s": 2.0}
REASON = ("humanoid_1's clock is 612.3 s behind the manager's: its reports are fused on corrected stamps; "
          "sync its clock (NTP/chrony)")


def test_watch_names_the_robot_of_a_clock_skew_alert(tmp_path):
    """It printed `ALERT clock_skew "" - humanoid_1's clock ...`: the alert has no task, and the line
    quoted the missing task's empty text where the robot belongs."""
    with (fleet_manager_process(tmp_path, PARAMS) as manager, ros_node("watch_alerts_test") as (node, executor),
          node_process("tests.fleet.skewed_robot", "/humanoid_1/skewed_robot",
                       {"robot_id": "humanoid_1", "robot_type": "humanoid", "skew_s": -612.3}, tmp_path)):
        alerts: list[dict] = []
        node.create_subscription(String, "/fleet/alerts", lambda m: alerts.append(json.loads(m.data)), LATCHED_QOS)
        assert spin_until(executor, lambda: bool(alerts), 30), manager.output()
        rc, lines = run_task(executor, ["watch", "--count", "1"], timeout=60)
    assert rc == 0, lines
    assert lines == [f"ALERT clock_skew humanoid_1 - {REASON}"], lines
