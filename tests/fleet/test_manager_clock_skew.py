"""The fleet manager (own process, real DDS) with robots whose clocks are not synchronised: two robot
processes 10 minutes apart report the same fire. Before, the manager fused reports on the robots' raw
stamps: two incidents, never fused, and no word about the clock. Also the setting's checks."""

from __future__ import annotations

import json
import math

import pytest
from ember_msgs.msg import RobotStatus
from ember_msgs.srv import SubmitTask
from std_msgs.msg import Header, String

from ember.fleet_config import FleetConfigError, load_dict, manager_description
from ember.ros.qos import LATCHED_QOS, STATUS_QOS
from tests.fleet.helpers import (
    Diagnostics,
    Proc,
    fleet_manager_process,
    node_process,
    set_parameter,
    write_params,
)
from tests.ros.helpers import ros_node, spin_until
from tests.ros.node_helpers import SimClock, time_msg

DIAG = "ember/fleet_manager"
PARAMS = {"heartbeat_timeout_s": 3.0, "diagnostics_period_s": 0.2, "task_wait_s": 3.0, "clock_skew_warn_s": 2.0}
BEHIND = 612.3
REASON = ("humanoid_1's clock is 612.3 s behind the manager's: its reports are fused on corrected stamps; "
          "sync its clock (NTP/chrony)")


def robot(tmp_path, rid: str, rtype: str, skew_s: float):
    """A stand-in robot process (tests/fleet/skewed_robot.py) whose clock is `skew_s` off."""
    return node_process("tests.fleet.skewed_robot", f"/{rid}/skewed_robot",
                        {"robot_id": rid, "robot_type": rtype, "skew_s": skew_s}, tmp_path)


@pytest.mark.ros
def test_two_robots_ten_minutes_apart_report_one_fire_and_the_skew_is_alerted_once(tmp_path):
    with (fleet_manager_process(tmp_path, PARAMS) as manager, ros_node("clock_skew_test") as (node, executor),
          robot(tmp_path, "drone_1", "drone", 0.0), robot(tmp_path, "humanoid_1", "humanoid", -BEHIND)):
        alerts: list[dict] = []
        node.create_subscription(String, "/fleet/alerts", lambda m: alerts.append(json.loads(m.data)), LATCHED_QOS)
        diag = Diagnostics(node)
        assert spin_until(executor, lambda: diag.get(DIAG, "robots_online") == 2, 30), manager.output()
        for rid in ("drone_1", "humanoid_1"):  # both see the fire now, each stamping on its own clock
            set_parameter(node, executor, f"/{rid}/skewed_robot", "report", True)
        assert spin_until(executor, lambda: diag.get(DIAG, "reports") >= 2, 20), manager.output()
        assert diag.fresh(executor, DIAG)["incidents"] == "1", manager.output()

        client = node.create_client(SubmitTask, "/fleet/submit_task")
        assert spin_until(executor, client.service_is_ready, 20)
        future = client.call_async(SubmitTask.Request(task="Put out the fire"))
        assert spin_until(executor, future.done, 30), manager.output()
        res = future.result()
        assert res.success and "2 reports" in res.message, (res.message, manager.output())

        skews = lambda: [a for a in alerts if a["kind"] == "clock_skew"]  # noqa: E731
        assert spin_until(executor, lambda: skews(), 20), (alerts, manager.output())
        assert skews()[0]["robot_id"] == "humanoid_1" and skews()[0]["reason"] == REASON, skews()
        values = diag.fresh(executor, DIAG)
        assert abs(float(values["clock_behind_s.humanoid_1"]) - BEHIND) < 1.0, values
        assert abs(float(values["clock_behind_s.drone_1"])) < 1.0, values
        assert values["clock_skewed"] == "humanoid_1", values
        # many heartbeats later: still one alert and one warning line
        seen = diag.get(DIAG, "status_msgs")
        assert spin_until(executor, lambda: diag.get(DIAG, "status_msgs") >= seen + 30, 20), manager.output()
        assert len(skews()) == 1, skews()
        assert manager.output().count("clock is 612.3 s behind") == 1, manager.output()


def test_the_setting_goes_to_the_manager_and_a_bad_value_is_refused_with_its_key():
    robots = [{"id": "drone_1", "type": "drone"}]
    cfg = load_dict({"bundle": "/b", "robots": robots, "manager": {"clock_skew_warn_s": 30}})
    assert manager_description(cfg).parameters["clock_skew_warn_s"] == 30.0
    assert manager_description(load_dict({"bundle": "/b", "robots": robots})).parameters["clock_skew_warn_s"] == 2.0
    for bad, message in ((0.0, "must be > 0"), (math.nan, "expected a finite number")):
        with pytest.raises(FleetConfigError, match=rf"manager\.clock_skew_warn_s: {message}"):
            load_dict({"bundle": "/b", "robots": robots, "manager": {"clock_skew_warn_s": bad}})


def test_a_manager_started_directly_refuses_a_non_positive_clock_skew_limit(tmp_path):
    pf = write_params(tmp_path / "bad_manager.yaml", "/fleet_manager", {"clock_skew_warn_s": -1.0})
    proc = Proc(["-m", "ember.ros.fleet_manager", "--ros-args", "--params-file", str(pf)])
    try:
        assert proc.proc.wait(timeout=60) == 1, proc.output()
    finally:
        proc.stop()
    proc.wait_for_line(r"fleet_manager parameters\.clock_skew_warn_s: must be > 0", timeout=5)


@pytest.mark.ros
def test_under_sim_time_a_paused_clock_shared_by_all_shows_no_skew(tmp_path):
    """Manager and robot on use_sim_time with one /clock, paused at 42 s: heartbeats stamped 42 s keep
    coming in wall time, and the manager's clock reads 42 s too (0 before its first /clock: ignored)."""
    with (fleet_manager_process(tmp_path, {**PARAMS, "use_sim_time": True}) as manager,
          ros_node("sim_skew_test") as (node, executor)):
        clock = SimClock(node, executor, start=42.0)
        diag = Diagnostics(node)
        status = node.create_publisher(RobotStatus, "/fleet/status", STATUS_QOS)
        clock.wait_for_subscribers()

        def beat() -> bool:
            header = Header(stamp=time_msg(clock.now), frame_id="sim_r1")
            status.publish(RobotStatus(header=header, robot_id="sim_r1", robot_type="drone", available=True, battery=1.0))
            return diag.get(DIAG, "status_msgs") >= 40

        assert clock.spin_until(beat, 20), manager.output()
        values = diag.fresh(executor, DIAG)
        assert abs(float(values["clock_behind_s.sim_r1"])) < 0.5 and values["clock_skewed"] == "", values
        assert "clock_skew" not in manager.output(), manager.output()
