"""The fleet manager (own process, real DDS) under faulty robots: malformed reports and heartbeats
must not kill it or poison the fleet's plans."""

from __future__ import annotations

import math
import signal
import time

import pytest
from ember_msgs.msg import ActionPlan, IncidentAnalysis, RobotSelection, RobotStatus
from ember_msgs.srv import SubmitTask

from ember.ros.qos import PLAN_QOS, REPORT_QOS, STATUS_QOS
from ember.ros.sim import SimulatedRobots
from tests.fleet.helpers import Diagnostics, Proc, fleet_manager_process, write_params
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
DIAG = "ember/fleet_manager"
FIRE = [0.9, 0.7, 0.1, 0.2, 0.0]  # drone and humanoid
PARAMS = {"heartbeat_timeout_s": 3.0, "diagnostics_period_s": 0.3, "task_wait_s": 3.0}


class Fleet:
    """Five simulated robots (one per type), diagnostics and a SubmitTask client."""

    def __init__(self, node, executor, proc) -> None:
        self.node, self.executor, self.proc = node, executor, proc
        self.sim = SimulatedRobots(5, rate_hz=2.0, context=node.context)
        executor.add_node(self.sim)
        self.diag = Diagnostics(node)
        assert spin_until(executor, lambda: self.diag.get(DIAG, "robots_online") == 5, 60), proc.output()
        self.client = node.create_client(SubmitTask, "/fleet/submit_task")
        assert spin_until(executor, self.client.service_is_ready, 20)

    def report(self, rid: str, label: str, scores: list[float], confidence: float = 0.8, zero_stamp: bool = False) -> None:
        """Publish one robot's report once its publishers matched the manager."""
        self.sim.add_reporter(rid)
        assert spin_until(self.executor, self.sim.report_publishers_matched, 30)
        self.sim.publish_report(rid, label, scores, confidence=confidence, zero_stamp=zero_stamp)

    def wait_reports(self, n: int) -> None:
        assert spin_until(self.executor, lambda: self.diag.get(DIAG, "reports") >= n, 20), self.proc.output()

    def submit(self, task: str) -> SubmitTask.Response:
        future = self.client.call_async(SubmitTask.Request(task=task))
        assert spin_until(self.executor, future.done, 30), self.proc.output()
        return future.result()

    def close(self) -> None:
        self.executor.remove_node(self.sim)
        self.sim.destroy_node()


def test_a_heartbeat_with_an_invalid_robot_id_does_not_kill_the_manager(tmp_path):
    with fleet_manager_process(tmp_path, PARAMS) as proc, ros_node("faults_test") as (node, executor):
        fleet = Fleet(node, executor, proc)
        try:
            pub = node.create_publisher(RobotStatus, "/fleet/status", STATUS_QOS)
            assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 20)
            before = fleet.diag.get(DIAG, "status_msgs")
            for rid in ("robot-1", "9lives", "a b"):  # not usable in a ROS topic name
                pub.publish(RobotStatus(robot_id=rid, robot_type="drone", battery=1.0, available=True))
            assert spin_until(executor, lambda: fleet.diag.get(DIAG, "status_msgs") >= before + 20, 20), proc.output()
            values = fleet.diag.fresh(executor, DIAG)
            assert int(values["robots_seen"]) == 5, values
            fleet.report("sim_001", "on fire", FIRE)
            fleet.wait_reports(1)
            res = fleet.submit("Put out the fire")
            assert res.success, (res.message, proc.output())
            assert proc.proc.poll() is None, proc.output()
        finally:
            fleet.close()


def test_non_finite_or_out_of_range_reports_do_not_poison_the_fused_selection(tmp_path):
    with fleet_manager_process(tmp_path, PARAMS) as proc, ros_node("faults_test") as (node, executor):
        fleet = Fleet(node, executor, proc)
        try:
            fleet.report("sim_000", "on fire", FIRE)
            fleet.report("sim_001", "on fire", [math.nan] * 5, confidence=math.nan)  # a broken model
            fleet.report("sim_002", "on fire", [0.0, 0.0, 0.0, 0.0, 50.0])  # not a probability
            fleet.report("sim_003", "on fire", FIRE, confidence=math.inf)
            # rejected: sim_001 and sim_003 (analysis and selection), sim_002's selection
            assert spin_until(executor, lambda: fleet.diag.get(DIAG, "reports_rejected") >= 5
                              and fleet.diag.get(DIAG, "reports") >= 2, 20), proc.output()
            res = fleet.submit("Put out the fire")
            assert res.success, (res.message, proc.output())
            assert "types drone, humanoid (camera reports)" in res.message, res.message
            assert "2 reports" in res.message, res.message  # sim_002's analysis itself is fine
            assert proc.proc.poll() is None, proc.output()
        finally:
            fleet.close()



def test_reports_a_third_party_camera_left_unstamped_are_still_joined(tmp_path):
    """A reporter whose camera leaves header stamps zero: the manager stamped its analysis and its
    selection each with its own arrival time, so the pair never joined and the incident had no robot
    selection (the task failed after task_wait_s). Now one image's pair shares the stamp."""
    with fleet_manager_process(tmp_path, PARAMS) as proc, ros_node("faults_test") as (node, executor):
        fleet = Fleet(node, executor, proc)
        try:
            for rid in ("sim_000", "sim_001"):  # two unstamped reporters, one image each
                fleet.report(rid, "on fire", FIRE, zero_stamp=True)
            fleet.wait_reports(2)
            res = fleet.submit("Put out the fire")
            assert res.success, (res.message, proc.output())
            assert "types drone, humanoid (camera reports)" in res.message and "2 reports" in res.message, res.message
        finally:
            fleet.close()


def test_a_robot_with_a_clock_far_ahead_does_not_hijack_the_fleets_tasks(tmp_path):
    """A robot whose clock runs a day ahead stamps its reports in the future; the incidents the
    other robots report now must still count as the recent ones."""
    with fleet_manager_process(tmp_path, PARAMS) as proc, ros_node("faults_test") as (node, executor):
        fleet = Fleet(node, executor, proc)
        try:
            inc_pub = node.create_publisher(IncidentAnalysis, "/sim_002/ember/incident", REPORT_QOS)
            sel_pub = node.create_publisher(RobotSelection, "/sim_002/ember/robot_selection", REPORT_QOS)
            assert spin_until(executor, lambda: inc_pub.get_subscription_count() > 0
                              and sel_pub.get_subscription_count() > 0, 20)
            stamp = node.get_clock().now().to_msg()
            stamp.sec += 86_400
            inc = IncidentAnalysis(robot_id="sim_002", incident_type="flooded", confidence=0.9, place="street")
            inc.header.stamp = stamp
            sel = RobotSelection(robot_id="sim_002", confidence=0.9, robot_types=["underwater"])
            sel.header.stamp, sel.scores = stamp, [0.0, 0.1, 0.1, 0.1, 0.9]
            inc_pub.publish(inc)
            sel_pub.publish(sel)
            fleet.wait_reports(1)
            fleet.report("sim_000", "on fire", FIRE)
            fleet.report("sim_001", "on fire", FIRE)
            fleet.wait_reports(3)
            res = fleet.submit("Put out the fire")
            assert res.success, (res.message, proc.output())
            assert "on-fire" in res.incident_id and "types drone, humanoid" in res.message, res.message
        finally:
            fleet.close()


def test_a_restarted_manager_cancels_the_plans_of_its_previous_run(tmp_path):
    """Robots keep the plans of a manager that died; the new one knows nothing of them, so when a
    robot's heartbeat names such a plan, the new manager cancels it (robots do not work on stale
    plans forever)."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with ros_node("faults_test") as (node, executor):
        with fleet_manager_process(tmp_path / "first", PARAMS) as proc:
            fleet = Fleet(node, executor, proc)
            fleet.report("sim_000", "on fire", FIRE)
            fleet.wait_reports(1)
            res = fleet.submit("Put out the fire")
            assert res.success, (res.message, proc.output())
            assert spin_until(executor, lambda: len(fleet.sim.plans_for(res.plan_ids)) == len(res.plan_ids), 20)
        old = list(res.plan_ids)
        with fleet_manager_process(tmp_path / "second", PARAMS) as proc:
            try:
                def all_cancelled() -> bool:
                    plans = fleet.sim.plans_for(old)
                    return all(p.status == ActionPlan.STATUS_CANCELLED for p in plans.values())

                assert spin_until(executor, all_cancelled, 20), (fleet.sim.plans_for(old), proc.output())
            finally:
                fleet.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_manager_at_once_while_a_task_waits_for_reports(tmp_path, sig):
    """SubmitTask waits up to task_wait_s for a first report; SIGTERM/SIGINT must not wait with it
    (ember-fleet kills a child that takes over 15 s) nor publish on a shut-down context."""
    pf = write_params(tmp_path / "params.yaml", "/fleet_manager", {**PARAMS, "task_wait_s": 30.0})
    proc = Proc(["-m", "ember.ros.fleet_manager", "--ros-args", "--params-file", str(pf)])
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        with ros_node("faults_test") as (node, executor):
            client = node.create_client(SubmitTask, "/fleet/submit_task")
            assert spin_until(executor, client.service_is_ready, 20)
            client.call_async(SubmitTask.Request(task="Help at the scene"))
            proc.wait_for_line(r"task 'Help at the scene' waits up to 30s", timeout=20)
            t0 = time.monotonic()
            rc = proc.stop(sig)
            took = time.monotonic() - t0
    finally:
        proc.stop(signal.SIGKILL)
    out = proc.output()
    assert rc == 0, out
    assert took < 5.0, (took, out)
    assert "exception" not in out.lower() and "Traceback" not in out, out


def test_two_robots_with_one_name_do_not_make_plans_flip_flop(tmp_path):
    """A drone and a humanoid both configured as 'dup': the manager keeps the first one it saw
    while that one is online and says so, instead of moving steps back and forth on every
    heartbeat."""
    with fleet_manager_process(tmp_path, PARAMS) as proc, ros_node("faults_test") as (node, executor):
        fleet = Fleet(node, executor, proc)
        try:
            pub = node.create_publisher(RobotStatus, "/fleet/status", STATUS_QOS)
            plans: list[ActionPlan] = []
            node.create_subscription(ActionPlan, "/dup/ember/action_plan", plans.append, PLAN_QOS)
            assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 20)

            def beat() -> None:
                for rtype in ("drone", "humanoid"):  # naming the plan they hold, as robots do
                    pub.publish(RobotStatus(robot_id="dup", robot_type=rtype, battery=1.0, available=True,
                                            current_plan_id=plans[-1].plan_id if plans else ""))

            node.create_timer(0.2, beat)
            assert spin_until(executor, lambda: "robot dup (drone) joined" in proc.output(), 20), proc.output()
            fleet.report("sim_000", "on fire", FIRE)
            fleet.wait_reports(1)
            res = fleet.submit("Put out the fire")
            assert res.success and "task-0001/dup" in res.plan_ids, (res.message, proc.output())
            spin_until(executor, lambda: False, 3.0)  # 15 heartbeats of each 'dup'
            assert [p.status for p in plans] == [ActionPlan.STATUS_NEW], (plans, proc.output())
            assert "moves from" not in proc.output(), proc.output()
            assert "two robots with one name" in proc.output(), proc.output()
        finally:
            fleet.close()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"heartbeat_timeout_s": -1.0}, r"fleet_manager parameters\.heartbeat_timeout_s: must be > 0"),
        ({"fusion_window_s": math.nan}, r"fleet_manager parameters\.fusion_window_s: expected a finite number"),
        ({"selection_threshold": 1.5}, r"fleet_manager parameters\.selection_threshold: must be within 0\.\.1"),
        ({"weight_load": -0.25}, r"fleet_manager parameters\.weights\.load: must be >= 0"),
        ({"check_period_s": 0.0}, r"fleet_manager parameters\.check_period_s: must be > 0"),
        ({"forget_after_s": -1.0}, r"fleet_manager parameters\.forget_after_s: must be >= 0"),
    ],
)
def test_a_manager_started_directly_refuses_unusable_parameters(tmp_path, params, message):
    """`ros2 run ember fleet_manager --params-file ...` skips fleet.yaml's checks: the node makes
    the same ones and exits 1 with one line naming the parameter."""
    pf = write_params(tmp_path / "bad_manager.yaml", "/fleet_manager", params)
    proc = Proc(["-m", "ember.ros.fleet_manager", "--ros-args", "--params-file", str(pf)])
    try:
        assert proc.proc.wait(timeout=60) == 1, proc.output()
    finally:
        proc.stop()
    proc.wait_for_line(message, timeout=5)
    assert "Traceback" not in proc.output() and "READY" not in proc.output(), proc.output()


def test_a_robot_that_restarted_and_lost_its_plans_gets_them_again(tmp_path):
    """A robot restarting faster than heartbeat_timeout_s never goes offline, and the plan topic's
    history (the last PLAN_QOS messages) need not hold its plans: when its heartbeats say it holds
    none while it has steps here, the manager sends its plans again, unchanged, once."""
    with fleet_manager_process(tmp_path, PARAMS) as proc, ros_node("faults_test") as (node, executor):
        fleet = Fleet(node, executor, proc)
        try:
            fleet.report("sim_000", "on fire", FIRE)
            fleet.wait_reports(1)
            res = fleet.submit("Put out the fire")
            assert res.success, (res.message, proc.output())
            plan_id = res.plan_ids[0]
            robot = fleet.sim.robots[plan_id.rsplit("/", 1)[1]]
            assert spin_until(executor, lambda: plan_id in robot.open_plans, 20), proc.output()
            before = robot.open_plans[plan_id]
            robot.open_plans.clear()  # the restart: its heartbeats now name no plan
            assert spin_until(executor, lambda: plan_id in robot.open_plans, 20), proc.output()
            again = robot.open_plans[plan_id]
            assert again.status == ActionPlan.STATUS_UPDATED
            assert [(s.order, s.description) for s in again.steps] == [(s.order, s.description) for s in before.steps]
            assert fleet.diag.fresh(executor, DIAG)["plans_resent"] == "1", proc.output()
            assert "sending them again" in proc.output()
        finally:
            fleet.close()
