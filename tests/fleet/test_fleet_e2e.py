"""The fleet end to end over real DDS, each node in its own process (`ember-fleet --mode processes`):
camera -> incident node (real engine, tiny bundle) -> fleet manager -> action plans; a robot
whose battery drops, and robots that die mid-plan: reassignment, cancellation, nothing lost.

The manager's selection_threshold is 0 here, so every robot type is a suitable substitute and
the test does not depend on what the random-weight model prefers.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from ember_msgs.msg import ActionPlan, IncidentAnalysis, RobotSelection
from ember_msgs.srv import SubmitTask
from std_msgs.msg import String

from ember.labels import ROBOT_TYPES
from ember.ros.qos import LATCHED_QOS, PLAN_QOS, REPORT_QOS, TASK_QOS
from tests.fleet.helpers import Proc, set_parameter, write_fleet
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
ROBOTS = [("drone_1", "drone"), ("legged_1", "legged"), ("wheeled_1", "wheeled")]
TIMEOUT_S = 4.0


class Watcher:
    """Every plan, alert and fused selection the fleet publishes."""

    def __init__(self, node, executor) -> None:
        self.node, self.executor = node, executor
        self.plans: list[ActionPlan] = []
        self.alerts: list[dict] = []
        self.fused: list[RobotSelection] = []
        self.incidents: list[IncidentAnalysis] = []
        for rid, _ in ROBOTS:
            node.create_subscription(ActionPlan, f"/{rid}/ember/action_plan", self.plans.append, PLAN_QOS)
        node.create_subscription(IncidentAnalysis, "/drone_1/ember/incident", self.incidents.append, REPORT_QOS)
        node.create_subscription(String, "/fleet/alerts", lambda m: self.alerts.append(json.loads(m.data)), LATCHED_QOS)
        node.create_subscription(RobotSelection, "/fleet/fused_selection", self.fused.append, LATCHED_QOS)

    def latest(self, task: str) -> dict[str, ActionPlan]:
        """robot -> its latest plan of the task."""
        out = {}
        for p in self.plans:
            if p.plan_id.startswith(task + "/"):
                out[p.robot_id] = p
        return out

    def held(self, task: str) -> dict[tuple, str]:
        """step (order, description, type) -> robot holding it, from the latest plans."""
        out: dict[tuple, str] = {}
        for rid, p in self.latest(task).items():
            if p.status == ActionPlan.STATUS_CANCELLED:
                continue
            for s in p.steps:
                key = (s.order, s.description, s.robot_type)
                assert key not in out, f"step {key} in the plans of {out.get(key)} and {rid}"
                assert s.robot_id == rid
                out[key] = rid
        return out

    def alerted(self, task: str) -> set[tuple]:
        return {
            (a["order"], a["description"], a["robot_type"])
            for a in self.alerts
            if a.get("kind") == "unassignable" and a.get("task_id") == task
        }


@pytest.fixture(scope="module")
def fleet(tiny_bundle, tmp_path_factory, shared_data):
    cfg = write_fleet(
        tmp_path_factory.mktemp("fleet") / "fleet.yaml",
        tiny_bundle,
        ROBOTS,
        inference={"max_rate_hz": 2.0, "heartbeat_period_s": 0.5},
        manager={"heartbeat_timeout_s": TIMEOUT_S, "selection_threshold": 0.0, "max_robot_types": 3, "fusion_window_s": 30.0},
        cameras={"enabled": True, "images": str(shared_data / "incidents" / "images"), "rate_hz": 4.0},
    )
    text = cfg.read_text().replace("  type: legged", "  type: legged\n  camera: false").replace(
        "  type: wheeled", "  type: wheeled\n  camera: false"
    )
    cfg.write_text(text)
    proc = Proc(["-m", "ember.ros.fleet", "--config", str(cfg), "--mode", "processes"])
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        started = (line.split() for line in proc.lines if line.startswith("STARTED"))
        pids = {fqn: int(pid.split("=")[1]) for _, fqn, pid in started}
        assert set(pids) == {
            "/fleet_manager", "/drone_1/incident_node", "/drone_1/camera", "/legged_1/incident_node", "/wheeled_1/incident_node"
        }, pids
        with ros_node("fleet_test") as (node, executor):
            yield proc, pids, node, executor, Watcher(node, executor)
    finally:
        rc = proc.stop(signal.SIGINT, timeout=40)
        print(proc.output())  # shown by pytest when a test failed
    assert rc == 0
    assert "ember-fleet: stopped" in proc.output()


def _wait_robots_online(fleet_fixture) -> None:
    """Every robot's plan subscription seen, and every robot joined at the manager (its first
    heartbeat arrived there): a task sent before that left the steps of the robots not yet joined
    unassignable for a moment, with an alert (seen once in a fresh-clone run)."""
    proc, _, node, executor, _ = fleet_fixture
    for rid, rtype in ROBOTS:
        assert spin_until(
            executor, lambda r=rid: node.count_subscribers(f"/{r}/ember/action_plan") >= 2, timeout=60
        ), f"{rid} and the manager not up:\n{proc.output()}"
        proc.wait_for_line(rf"robot {rid} \({rtype}\) joined", timeout=60)


def test_camera_image_to_action_plans(fleet):
    proc, _, node, executor, w = fleet
    _wait_robots_online(fleet)
    assert spin_until(executor, lambda: len(w.incidents) >= 1, timeout=60), f"no report from drone_1:\n{proc.output()}"
    # the report is stamped with the replayed camera frame
    assert w.incidents[0].header.frame_id == "drone_1/camera" and w.incidents[0].header.stamp.sec > 0
    tasks = node.create_publisher(String, "/fleet/tasks", TASK_QOS)
    assert spin_until(executor, lambda: tasks.get_subscription_count() > 0, timeout=30)
    tasks.publish(String(data="Put out the fire and find survivors"))
    # three required types (threshold 0, max_robot_types 3): three steps, held by one or more robots
    assert spin_until(executor, lambda: len(w.held("task-0001")) == 3, timeout=30), w.plans
    assert spin_until(executor, lambda: bool(w.fused), timeout=10)
    fused = w.fused[-1]
    assert fused.robot_id == "fleet_manager" and "drone_1" in fused.reasoning
    # threshold 0: the three best-scored types, best first
    ranked = sorted(range(5), key=lambda i: (-fused.scores[i], i))[:3]
    assert list(fused.robot_types) == [ROBOT_TYPES[i] for i in ranked]
    plans = w.latest("task-0001")
    assert {p.status for p in plans.values()} == {ActionPlan.STATUS_NEW}
    assert {s.robot_type for p in plans.values() for s in p.steps} == set(fused.robot_types)
    assert len({p.incident_id for p in plans.values()}) == 1 and next(iter(plans.values())).incident_id.startswith("inc-")
    assert not w.alerted("task-0001")


def test_low_battery_moves_the_steps_and_cancels_the_old_plan(fleet):
    proc, _, node, executor, w = fleet
    held = w.held("task-0001")
    victim = sorted(set(held.values()))[0]
    mine = {k for k, r in held.items() if r == victim}
    n = len(w.plans)
    set_parameter(node, executor, f"/{victim}/incident_node", "battery", 0.1)
    try:
        assert spin_until(
            executor,
            lambda: any(p.plan_id == f"task-0001/{victim}" and p.status == ActionPlan.STATUS_CANCELLED for p in w.plans[n:])
            and all(w.held("task-0001").get(k) not in (None, victim) for k in mine),
            timeout=20,
        ), (w.plans[n:], proc.output())
        now = w.held("task-0001")
        assert set(now) == set(held)
        assert all(now[k] != victim for k in mine)
        # the receivers got a new plan (no plan for the task before) or an updated one
        receivers = {now[k] for k in mine}
        assert receivers <= {p.robot_id for p in w.plans[n:] if p.status != ActionPlan.STATUS_CANCELLED}
    finally:
        set_parameter(node, executor, f"/{victim}/incident_node", "battery", 1.0)


def test_robots_dying_mid_plan_lose_no_step(fleet):
    proc, pids, node, executor, w = fleet
    client = node.create_client(SubmitTask, "/fleet/submit_task")
    assert spin_until(executor, client.service_is_ready, timeout=30)
    future = client.call_async(SubmitTask.Request(task="Search the collapsed building"))
    assert spin_until(executor, future.done, timeout=30)
    res = future.result()
    assert res.success, res.message
    task = res.plan_ids[0].split("/")[0]
    assert spin_until(executor, lambda: set(w.latest(task)) == {p.split("/")[1] for p in res.plan_ids}, 30)
    steps = set(w.held(task))
    assert len(steps) == 3

    # SIGKILL: no goodbye, the heartbeats just stop
    victim = sorted(set(w.held(task).values()))[0]
    n = len(w.plans)
    t0 = time.monotonic()
    os.kill(pids[f"/{victim}/incident_node"], signal.SIGKILL)
    assert spin_until(
        executor,
        lambda: any(p.plan_id == f"{task}/{victim}" and p.status == ActionPlan.STATUS_CANCELLED for p in w.plans[n:])
        and victim not in w.held(task).values()
        and set(w.held(task)) == steps,  # plans to different robots may arrive in any order
        timeout=TIMEOUT_S + 20,
    ), (w.plans[n:], steps)
    assert time.monotonic() - t0 >= TIMEOUT_S - 0.5  # it waited for the heartbeat timeout
    proc.wait_for_line(rf"/{victim}/incident_node exited with code -9", timeout=10)

    # every robot dies: each step is reported unassignable on /fleet/alerts, none is lost
    for rid in sorted({r for r, _ in ROBOTS} - {victim}):
        os.kill(pids[f"/{rid}/incident_node"], signal.SIGKILL)
    assert spin_until(executor, lambda: steps <= w.alerted(task), timeout=TIMEOUT_S + 20), (w.alerts, proc.output())
    assert not w.held(task)
    for a in w.alerts:
        if a.get("task_id") == task:
            assert a["kind"] == "unassignable" and "offline" in a["reason"]
