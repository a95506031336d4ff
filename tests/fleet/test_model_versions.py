"""Mid-rollout the fleet runs mixed model versions: the fleet manager (own process, real DDS) names the
versions in use on /diagnostics (from each robot's latest IncidentAnalysis), and `ember-task watch`
prints them."""

from __future__ import annotations

import pytest
from ember_msgs.msg import IncidentAnalysis

from ember.ros.operator import format_models
from ember.ros.qos import REPORT_QOS
from tests.fleet.helpers import Diagnostics, fleet_manager_process
from tests.fleet.test_operator_cli import run_task
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
DIAG = "ember/fleet_manager"
ROBOTS = {"drone_1": "v1", "legged_1": "v1", "humanoid_1": "v2"}


def _report(robot_id: str, version: str) -> IncidentAnalysis:
    msg = IncidentAnalysis(robot_id=robot_id, incident_type="on fire", confidence=0.8, place="street",
                           model_version=version)
    msg.header.stamp.sec = 1000
    return msg


def test_the_manager_and_watch_name_the_model_versions_in_use(tmp_path):
    params = {"heartbeat_timeout_s": 3.0, "diagnostics_period_s": 0.3, "robot_ids": list(ROBOTS)}
    with fleet_manager_process(tmp_path, params) as proc, ros_node("model_versions_test") as (node, executor):
        diag = Diagnostics(node)
        assert diag.fresh(executor, DIAG, 30)["model_versions"] == "", "no report yet: no version"
        pubs = {rid: node.create_publisher(IncidentAnalysis, f"/{rid}/ember/incident", REPORT_QOS) for rid in ROBOTS}
        assert spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30)
        for rid, version in ROBOTS.items():
            pubs[rid].publish(_report(rid, version))
        expected = "v1 (drone_1, legged_1); v2 (humanoid_1)"
        assert spin_until(executor, lambda: diag.latest.get(DIAG, {}).get("model_versions") == expected, 20), (
            diag.latest.get(DIAG), proc.output())

        rc, lines = run_task(executor, ["watch", "--count", "1"])
        assert rc == 0 and lines == [f"models: {expected}"], lines

        pubs["legged_1"].publish(_report("legged_1", "v2"))  # the rollout goes on: the latest report counts
        expected = "v1 (drone_1); v2 (humanoid_1, legged_1)"
        assert spin_until(executor, lambda: diag.latest.get(DIAG, {}).get("model_versions") == expected, 20), (
            diag.latest.get(DIAG))


def test_a_large_fleet_lists_a_few_robots_per_version():
    assert format_models("") == ""
    line = "v1 (r_000, r_001, r_002, r_003, r_004 and 495 more); v2 (humanoid_1)"
    from ember.ros.fleet_manager import model_versions_text

    versions = {f"r_{i:03d}": "v1" for i in range(500)} | {"humanoid_1": "v2", "sim_1": ""}
    assert model_versions_text(versions) == line
    assert format_models(line) == f"models: {line}"


def test_a_robot_that_went_offline_is_named_offline_in_its_version(tmp_path):
    """A robot that stopped heartbeating still runs the model it last reported when it comes back: the
    operator sees it as `drone_1 offline` under that version, not as if it were running it now."""
    from ember_msgs.msg import RobotStatus

    from ember.ros.qos import STATUS_QOS

    params = {"heartbeat_timeout_s": 1.0, "diagnostics_period_s": 0.3, "robot_ids": ["drone_1", "legged_1"]}
    with fleet_manager_process(tmp_path, params) as proc, ros_node("model_versions_offline") as (node, executor):
        diag = Diagnostics(node)
        status = node.create_publisher(RobotStatus, "/fleet/status", STATUS_QOS)
        pubs = {rid: node.create_publisher(IncidentAnalysis, f"/{rid}/ember/incident", REPORT_QOS)
                for rid in ("drone_1", "legged_1")}
        assert spin_until(executor, lambda: status.get_subscription_count() > 0
                          and all(p.get_subscription_count() > 0 for p in pubs.values()), 30)

        def beat(rid: str, rtype: str) -> None:
            status.publish(RobotStatus(robot_id=rid, robot_type=rtype, battery=1.0, available=True))

        beat("drone_1", "drone")
        beat("legged_1", "legged")
        pubs["drone_1"].publish(_report("drone_1", "v1"))
        pubs["legged_1"].publish(_report("legged_1", "v2"))
        both = "v1 (drone_1); v2 (legged_1)"

        def versions_after_beat(expected: str, drone_beats: bool = False) -> bool:
            beat("legged_1", "legged")  # legged_1 stays online
            if drone_beats:
                beat("drone_1", "drone")
            return diag.latest.get(DIAG, {}).get("model_versions") == expected

        assert spin_until(executor, lambda: versions_after_beat(both), 20), (diag.latest.get(DIAG), proc.output())
        # drone_1 fell silent: offline after heartbeat_timeout_s
        assert spin_until(executor, lambda: versions_after_beat("v1 (drone_1 offline); v2 (legged_1)"), 20), (
            diag.latest.get(DIAG), proc.output())
        # back: named as running v1 again
        assert spin_until(executor, lambda: versions_after_beat(both, drone_beats=True), 20), diag.latest.get(DIAG)
