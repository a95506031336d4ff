"""A fleet manager running for days (in this process, real rclpy and DDS): what it keeps per robot,
task and plan must stay bounded when robots come and go and tasks are opened and closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from ember_msgs.msg import ActionPlan, RobotStatus
from rclpy.parameter import Parameter
from std_msgs.msg import String

from ember.ros.fleet_manager import MAX_WARNINGS, FleetManager
from ember.ros.qos import STATUS_QOS
from ember.ros.sim import MAX_PLAN_HISTORY, SimRobot, SimulatedRobots
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
FIRE = [0.9, 0.7, 0.1, 0.2, 0.0]  # drone and humanoid
ROAD = [0.6, 0.1, 0.9, 0.2, 0.0]  # wheeled, drone


@contextmanager
def manager_in_process(name: str, **params: object) -> Iterator[tuple[FleetManager, object, object]]:
    """(manager, test node, executor): a FleetManager spun with a test node on one executor."""
    with ros_node(name) as (node, executor):
        mgr = FleetManager(
            context=node.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
        )
        executor.add_node(mgr)
        try:
            yield mgr, node, executor
        finally:
            executor.remove_node(mgr)
            mgr.destroy_node()


def endpoint_counts(mgr: FleetManager) -> tuple[int, int, int]:
    """(publishers, subscriptions, AnalyzeImage clients) the manager holds."""
    return len(list(mgr.publishers)), len(list(mgr.subscriptions)), len(list(mgr._task_node.clients))


def report_until_fused(sim: SimulatedRobots, mgr: FleetManager, executor, rid: str, label: str, scores) -> None:
    """Publish one report of `rid` once its publishers matched, and wait until the manager fused it."""
    sim.add_reporter(rid)
    assert spin_until(executor, sim.report_publishers_matched, 20)
    sim.publish_report(rid, label, scores)
    assert spin_until(
        executor, lambda: any(i.fused_scores() for i in mgr._fuser.incidents.values()), 20
    ), mgr.snapshot()


def report_until_reported_by(mgr: FleetManager, executor, node, rid: str) -> None:
    """`rid` reports the blocked road; wait until the manager's incident lists it."""
    reporter = SimulatedRobots(0, context=node.context, node_name=f"reporter_{rid}")
    executor.add_node(reporter)
    try:
        reporter.add_reporter(rid)
        assert spin_until(executor, reporter.report_publishers_matched, 20)
        reporter.publish_report(rid, "blocked road", ROAD)
        assert spin_until(
            executor, lambda: any(rid in i.reports for i in mgr._fuser.incidents.values()), 20
        ), mgr.snapshot()
    finally:
        executor.remove_node(reporter)
        reporter.destroy_node()


def test_robots_that_leave_for_good_under_new_names_do_not_pile_up():
    """Robots replaced or renamed over days: each new id gets report subscriptions and a plan
    publisher; once gone for forget_after_s they must be dropped (3 DDS endpoints, 7 dict entries
    and a bid per step per robot, forever, before the fix). The fleet file's robots stay."""
    with manager_in_process(
        "long_run_robots", heartbeat_timeout_s=0.3, forget_after_s=0.6, check_period_s=0.05,
        robot_ids=["kept_1"],
    ) as (mgr, node, executor):
        pub = node.create_publisher(RobotStatus, "/fleet/status", STATUS_QOS)
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 20)
        base = endpoint_counts(mgr)

        def beat(rid: str, robot_type: str = "drone") -> None:
            pub.publish(RobotStatus(robot_id=rid, robot_type=robot_type, battery=1.0, available=True))

        beat("kept_1")
        reporter = SimulatedRobots(0, context=node.context, node_name="reporter")
        executor.add_node(reporter)
        try:
            report_until_fused(reporter, mgr, executor, "kept_1", "blocked road", ROAD)
        finally:
            executor.remove_node(reporter)
            reporter.destroy_node()
        waves, per_wave = 6, 10
        for w in range(waves):
            for rid in [f"temp_{w}_{i}" for i in range(per_wave)]:
                beat(rid, "wheeled")
            assert spin_until(executor, lambda: mgr.snapshot()["robots_online"] >= per_wave, 20), mgr.snapshot()
            if w == 0:  # one of them reports the incident too
                report_until_reported_by(mgr, executor, node, "temp_0_0")
            ok, msg, _, plan_ids = mgr.plan_task("Clear the blocked road", None)
            assert ok and any("/temp_" in p for p in plan_ids), (msg, plan_ids)
            # the wave stops: its robots go offline (their steps move), then are forgotten
            assert spin_until(executor, lambda: mgr.snapshot()["robots_seen"] <= 1, 20), mgr.snapshot()

        snap = mgr.snapshot()
        assert snap["robots_forgotten"] == waves * per_wave, snap
        assert snap["robots_seen"] == 1 and snap["robots_expected"] == 1, snap  # kept_1: in robot_ids
        assert endpoint_counts(mgr) == base, (endpoint_counts(mgr), base)
        assert set(mgr._alloc.robots) == {"kept_1"} and set(mgr._robots) == {"kept_1"}
        # a forgotten robot's reports stop counting in the incidents it reported
        assert [i.reporters for i in mgr._fuser.incidents.values()] == [["kept_1"]]

        # a forgotten robot that comes back joins anew and can take steps again
        for _ in range(3):
            beat("temp_0_0", "wheeled")
        assert spin_until(executor, lambda: "temp_0_0" in mgr._alloc.robots and mgr._alloc.robots["temp_0_0"].online,
                          20)
        ok, msg, _, plan_ids = mgr.plan_task("Clear the blocked road", None)
        assert ok and "temp_0_0" in msg, msg
        assert endpoint_counts(mgr)[0] == base[0] + 1


def test_tasks_opened_and_closed_leave_no_bookkeeping_behind():
    """Thousands of tasks planned and closed (task_done): the manager's and the allocator's
    per-task and per-plan state returns to what an idle fleet holds."""
    with manager_in_process("long_run_tasks", heartbeat_timeout_s=5.0) as (mgr, node, executor):
        sim = SimulatedRobots(5, rate_hz=5.0, context=node.context)
        executor.add_node(sim)
        try:
            assert spin_until(executor, lambda: mgr.snapshot()["robots_online"] == 5, 30), mgr.snapshot()
            report_until_fused(sim, mgr, executor, "sim_000", "on fire", FIRE)
            stale_after_warmup = 0
            for i in range(1500):
                ok, message, _, plan_ids = mgr.plan_task("Put out the fire", None)
                assert ok, message
                assert mgr.finish_task(plan_ids[0].split("/")[0])
                if i % 50 == 0:
                    executor.spin_once(timeout_sec=0.0)
                if i == 500:
                    stale_after_warmup = sum(len(r.stale_cancelled) for r in mgr._robots.values())
            snap = mgr.snapshot()
            assert snap["tasks_open"] == 0 and snap["steps_assigned"] == 0, snap
            alloc = mgr._alloc
            assert not (mgr._tasks or alloc._tasks or alloc._owner or alloc._steps or alloc._pending
                        or alloc._active_plans)
            assert len(mgr._alloc_ms) <= 200 and len(mgr._warned) <= 1000
            # cancellations remembered per robot stay capped (they are cleared, not kept for ever)
            assert sum(len(r.stale_cancelled) for r in mgr._robots.values()) <= max(stale_after_warmup, 5 * 100)
        finally:
            executor.remove_node(sim)
            sim.destroy_node()


def test_a_simulated_robot_keeps_a_bounded_record_and_names_its_newest_open_plan():
    """SimulatedRobots stand in for robots in long benches: each heartbeat scanned every plan
    ever received (O(plans) per heartbeat, growing for ever). Now the record is bounded and the
    heartbeat names the newest open plan, as an incident node does."""
    robot = SimRobot("sim_000", "drone")

    def plan(n: int, status: str) -> ActionPlan:
        return ActionPlan(plan_id=f"task-{n:05d}/sim_000", robot_id="sim_000", status=status)

    robot.receive(plan(0, "new"))  # stays open throughout
    for n in range(1, 3 * MAX_PLAN_HISTORY):
        robot.receive(plan(n, "new"))
        robot.receive(plan(n, "updated"))
        robot.receive(plan(n - 1, "cancelled") if n > 1 else plan(0, "updated"))
    assert len(robot.plans) == MAX_PLAN_HISTORY
    assert list(robot.open_plans) == ["task-00000/sim_000", f"task-{3 * MAX_PLAN_HISTORY - 1:05d}/sim_000"]
    assert robot.current_plan_id == f"task-{3 * MAX_PLAN_HISTORY - 1:05d}/sim_000"
    robot.receive(plan(3 * MAX_PLAN_HISTORY - 1, "cancelled"))
    assert robot.current_plan_id == "task-00000/sim_000"


def test_warn_once_keeps_holding_for_a_broken_robot_after_many_unknown_task_ids():
    """Every task_done naming a task that is not open is a new warn-once key. The set used to stop
    remembering keys once full (after 1000 such ids: about 20 minutes of the soak's operator
    traffic), and from then on a broken robot's heartbeats logged one warning each, 2/s for ever.
    The memory stays bounded and the key that keeps coming stays remembered."""
    with manager_in_process("long_run_warnings") as (mgr, _node, _executor):
        for n in range(2 * MAX_WARNINGS):  # a long run of operator traffic first
            mgr._on_task_done(String(data=f"task-{n:05d}"))
        bad = RobotStatus(robot_id="bad-id", robot_type="drone", battery=1.0, available=True)
        for n in range(2 * MAX_WARNINGS, 4 * MAX_WARNINGS):  # then a robot breaks, heartbeats among the traffic
            if n % 100 == 0:
                mgr._on_status(bad)
            mgr._on_task_done(String(data=f"task-{n:05d}"))
        assert len(mgr._warned) <= MAX_WARNINGS
        assert any(k.startswith("bad-status-bad-id") for k in mgr._warned), "each heartbeat of the broken robot warns"
