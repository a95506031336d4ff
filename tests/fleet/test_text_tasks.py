"""Operator tasks in the fleet are decided by their text: the fleet manager (own process, real
DDS) lets the bundle's text robot selector pick a task's robot types, as the robots' engine does,
and plans such a task at once from its own text, even when no robot has reported anything; it
falls back to the fused camera reports for a task with no
known word, and runs on the camera reports alone (diagnostics warn) when the bundle's selector
file is corrupt."""

from __future__ import annotations

import shutil

import cv2
import pytest
from ember_msgs.msg import RobotSelection
from ember_msgs.srv import SubmitTask
from std_msgs.msg import String

from ember.engine.robot_selector import SELECTOR_FILE
from ember.labels import ROBOT_TYPES
from ember.ros.conversions import numpy_to_image
from ember.ros.qos import LATCHED_QOS, TASK_QOS
from ember.ros.sim import SimulatedRobots
from tests.fleet.helpers import Diagnostics, Proc, fleet_manager_process, write_params
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
DIAG = "ember/fleet_manager"
FIRE = [0.9, 0.7, 0.1, 0.2, 0.0]  # what the robots' cameras report: drone and humanoid
UNDERWATER = ROBOT_TYPES.index("underwater")


def manager(tmp_path, bundle):
    params = {"heartbeat_timeout_s": 3.0, "diagnostics_period_s": 0.5, "task_wait_s": 5.0, "bundle": str(bundle)}
    return fleet_manager_process(tmp_path, params)


class Operator:
    """Ten simulated robots (two of each type), `reporters` of which report a fire, and a SubmitTask client."""

    def __init__(self, node, executor, proc, reporters=("sim_000", "sim_001", "sim_002")) -> None:
        self.node, self.executor, self.proc = node, executor, proc
        self.sim = SimulatedRobots(10, rate_hz=2.0, context=node.context)
        executor.add_node(self.sim)
        self.diag = Diagnostics(node)
        self.fused: list[RobotSelection] = []
        node.create_subscription(RobotSelection, "/fleet/fused_selection", self.fused.append, LATCHED_QOS)
        assert spin_until(executor, lambda: self.diag.get(DIAG, "robots_online") == 10, timeout=60), proc.output()
        for rid in reporters:
            self.sim.add_reporter(rid)
        assert spin_until(executor, self.sim.report_publishers_matched, timeout=30)
        for rid in reporters:
            self.sim.publish_report(rid, "on fire", FIRE)
        assert spin_until(executor, lambda: self.diag.get(DIAG, "reports") >= len(reporters), timeout=30), proc.output()
        self.client = node.create_client(SubmitTask, "/fleet/submit_task")
        assert spin_until(executor, self.client.service_is_ready, 20)

    def call(self, task: str) -> SubmitTask.Response:
        future = self.client.call_async(SubmitTask.Request(task=task))
        assert spin_until(self.executor, future.done, 30)
        return future.result()

    def submit(self, task: str):
        """(response, robot types of the plan holders, types of the plans' steps, the fused selection message)."""
        n = len(self.fused)
        res = self.call(task)
        assert res.success, (res.message, self.proc.output())
        assert spin_until(self.executor, lambda: len(self.sim.plans_for(res.plan_ids)) == len(res.plan_ids)
                          and len(self.fused) > n, 20)
        plans = self.sim.plans_for(res.plan_ids).values()
        holders = {self.sim.robots[p.robot_id].robot_type for p in plans}
        step_types = {s.robot_type for p in plans for s in p.steps}
        return res, holders, step_types, self.fused[-1]


def test_the_task_text_picks_the_robot_types(selector_bundle, tmp_path):
    bundle, selector, task = selector_bundle
    want = selector.select(task)
    with manager(tmp_path, bundle) as proc, ros_node("text_task_test") as (node, executor):
        op = Operator(node, executor, proc)
        assert op.diag.latest[DIAG]["text_selector"].startswith("on")

        res, holders, step_types, fused = op.submit(task)
        assert "(text selector)" in res.message, res.message
        assert holders == step_types == {"underwater"}, (res.message, holders, step_types)
        assert list(fused.robot_types) == ["underwater"]
        assert fused.scores == pytest.approx([float(s) for s in want.scores], abs=1e-6)
        assert "text robot selector" in fused.reasoning
        # filed under the reported fire (the only incident), its step is the task's own text
        assert res.incident_id == "inc-0001-on-fire", res.message
        steps = [s for p in op.sim.plans_for(res.plan_ids).values() for s in p.steps]
        assert all(s.description.startswith(task.rstrip(". ")) for s in steps), steps

        # no word the selector knows: the camera reports decide, as on the robots
        res, holders, step_types, fused = op.submit("Zzxq qqvw")
        assert "(camera reports)" in res.message, res.message
        assert step_types == {"drone", "humanoid"} and holders <= {"drone", "humanoid"}
        assert fused.scores == pytest.approx(FIRE, abs=1e-6)
        steps = [s for p in op.sim.plans_for(res.plan_ids).values() for s in p.steps]
        assert not any("Zzxq" in s.description for s in steps), steps  # the incident's template steps
        values = op.diag.fresh(executor, DIAG)
        assert int(values["tasks_text_selected"]) == 1 and int(values["tasks"]) == 2
        assert int(values["tasks_without_incident"]) == 0


def test_a_text_task_is_planned_without_any_incident_report(selector_bundle, tmp_path):
    bundle, _, task = selector_bundle
    with manager(tmp_path, bundle) as proc, ros_node("text_task_alone") as (node, executor):
        op = Operator(node, executor, proc, reporters=())
        res, holders, step_types, fused = op.submit(task)
        assert "(no incident)" in res.message and "(text selector)" in res.message, res.message
        assert res.incident_id == "" and holders == step_types == {"underwater"}
        plan = next(iter(op.sim.plans_for(res.plan_ids).values()))
        assert plan.incident_id == "" and plan.steps[0].description.startswith(task.rstrip(". "))
        assert fused.header.frame_id == "" and fused.reasoning.startswith("operator task without an incident")

        # the same on the /fleet/tasks topic: planned at once, not parked waiting for reports
        pub = node.create_publisher(String, "/fleet/tasks", TASK_QOS)
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 20)
        pub.publish(String(data=task))
        assert spin_until(executor, lambda: op.sim.plans_for(["task-0002/sim_004", "task-0002/sim_009"]), 20), proc.output()

        # a task the selector cannot decide still needs an incident: it waits, then fails
        res = op.call("Zzxq qqvw")
        assert not res.success and res.message == "no incident reported yet", res.message
        values = op.diag.fresh(executor, DIAG)
        assert int(values["tasks_without_incident"]) == 2 and int(values["tasks_failed"]) == 1


def test_the_operator_closes_a_task_on_the_task_done_topic(selector_bundle, tmp_path):
    """/fleet/task_done (a task id): the task's robots get cancellations, its steps no longer
    count as their load, and an id that is not an open task changes nothing."""
    bundle, _, task = selector_bundle
    with manager(tmp_path, bundle) as proc, ros_node("text_task_done") as (node, executor):
        op = Operator(node, executor, proc, reporters=())
        first, _, _, _ = op.submit(task)
        second, _, _, _ = op.submit(task)
        values = op.diag.fresh(executor, DIAG)
        assert int(values["tasks_open"]) == 2 and int(values["steps_assigned"]) == 2, values

        done = node.create_publisher(String, "/fleet/task_done", TASK_QOS)
        assert spin_until(executor, lambda: done.get_subscription_count() > 0, 20)
        done.publish(String(data="task-0099"))
        done.publish(String(data=first.plan_ids[0].split("/")[0]))
        assert spin_until(executor, lambda: all(p.status == "cancelled"
                                                for p in op.sim.plans_for(first.plan_ids).values()), 20), proc.output()
        proc.wait_for_line(r"'task-0099' on the task-done topic is not an open task", timeout=10)
        values = op.diag.fresh(executor, DIAG)
        assert int(values["tasks_open"]) == 1 and int(values["tasks_finished"]) == 1, values
        assert int(values["steps_assigned"]) == 1, values
        assert {p.status for p in op.sim.plans_for(second.plan_ids).values()} == {"new"}
        rid = first.plan_ids[0].split("/")[1]  # one cancellation, even if a heartbeat still named the plan
        assert [p.status for _, p in op.sim.robots[rid].plans if p.plan_id == first.plan_ids[0]] == ["new", "cancelled"]


def test_a_task_with_an_image_is_analysed_by_a_robot_whose_plan_it_keeps(selector_bundle, tmp_path, shared_data):
    """SubmitTask with an image: a live robot (incident node, real engine) analyses it for the task;
    the text selector still picks the types, the task belongs to that robot's incident, and its
    steps come from that incident (the robot's plan for the task, or templates), not the task text."""
    bundle, _, task = selector_bundle
    params = {"robot_id": "diver_1", "robot_type": "underwater", "bundle": str(bundle), "max_rate_hz": 0.0,
              "heartbeat_period_s": 0.5}
    pf = write_params(tmp_path / "robot_params.yaml", "/diver_1/incident_node", params)
    robot = Proc(["-m", "ember.ros.incident_node", "--ros-args", "-r", "__ns:=/diver_1", "--params-file", str(pf)])
    try:
        robot.wait_for_line(r"^READY$", timeout=90)
        with manager(tmp_path, bundle) as proc, ros_node("text_task_image") as (node, executor):
            diag = Diagnostics(node)
            assert spin_until(executor, lambda: diag.get(DIAG, "robots_online") == 1, timeout=60), proc.output()
            bgr = cv2.imread(str(shared_data / "incidents" / "images" / "flooded_parking_lot.jpg"))
            image = numpy_to_image(cv2.cvtColor(cv2.resize(bgr, (160, 120)), cv2.COLOR_BGR2RGB), "rgb8")
            client = node.create_client(SubmitTask, "/fleet/submit_task")
            assert spin_until(executor, client.service_is_ready, 20)
            future = client.call_async(SubmitTask.Request(task=task, has_image=True, image=image))
            assert spin_until(executor, future.done, 60)
            res = future.result()
            assert res.success, (res.message, proc.output(), robot.output())
            assert res.incident_id.startswith("inc-0001-") and ", 1 reports)" in res.message, res.message
            assert "types underwater (text selector)" in res.message, res.message
            assert "steps (task)" not in res.message and res.plan_ids == ["task-0001/diver_1"], res.message
            values = diag.fresh(executor, DIAG)
            assert int(values["reports"]) >= 1 and int(values["tasks_without_incident"]) == 0
    finally:
        assert robot.stop() == 0, robot.output()


def test_a_corrupt_selector_leaves_the_camera_reports_in_charge(selector_bundle, tmp_path):
    bundle, _, task = selector_bundle
    bad = shutil.copytree(bundle, tmp_path / "bad_bundle")
    raw = bytearray((bad / SELECTOR_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bad / SELECTOR_FILE).write_bytes(bytes(raw))
    with manager(tmp_path, bad) as proc, ros_node("text_task_bad") as (node, executor):
        proc.wait_for_line(r"text robot selector unavailable.*sha256", timeout=10)
        op = Operator(node, executor, proc)
        assert op.diag.latest[DIAG]["text_selector"].startswith("error")
        res, holders, step_types, _ = op.submit(task)
        assert "(camera reports)" in res.message, res.message
        assert step_types == {"drone", "humanoid"}


def test_the_fleet_file_gives_the_manager_the_bundle_unless_text_selection_is_off(tmp_path):
    from ember.fleet_config import load_dict, manager_description

    data = {"bundle": str(tmp_path), "robots": [{"id": "d1", "type": "drone"}]}
    assert manager_description(load_dict(data)).parameters["bundle"] == str(tmp_path.resolve())
    off = load_dict({**data, "manager": {"text_selector": False}})
    assert manager_description(off).parameters["bundle"] == ""
