"""The fleet manager (own process) with 50 simulated robots reporting status at 2 Hz over real DDS."""

from __future__ import annotations

import time

import pytest
from ember_msgs.msg import ActionPlan
from ember_msgs.srv import SubmitTask

from ember.ros.sim import SimulatedRobots
from tests.fleet.helpers import Diagnostics, fleet_manager_process
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
N = 50
DIAG = "ember/fleet_manager"
FIRE = [0.9, 0.7, 0.1, 0.2, 0.0]  # drone and humanoid


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    params = {"heartbeat_timeout_s": 3.0, "diagnostics_period_s": 0.5, "selection_threshold": 0.5, "task_wait_s": 5.0}
    with fleet_manager_process(tmp_path_factory.mktemp("manager"), params) as proc:
        yield proc


def test_fifty_robots_at_2hz_are_tracked_allocated_and_failed_over(manager):
    with ros_node("scale_test") as (node, executor):
        sim = SimulatedRobots(N, rate_hz=2.0, context=node.context)
        executor.add_node(sim)
        diag = Diagnostics(node)
        try:
            assert spin_until(executor, lambda: diag.get(DIAG, "robots_online") == N, timeout=60), (
                diag.latest.get(DIAG), manager.output())
            # the manager keeps up: it handles (nearly) every heartbeat of a 5 s window
            v0 = diag.fresh(executor, DIAG)
            sent0 = sim.heartbeats_sent
            spin_until(executor, lambda: False, 5.0)
            v1 = diag.fresh(executor, DIAG)
            sent = sim.heartbeats_sent - sent0
            handled = int(v1["status_msgs"]) - int(v0["status_msgs"])
            assert sent >= 0.8 * N * 2 * 5, sent  # the simulator itself kept its 2 Hz
            assert handled >= 0.9 * sent, (handled, sent)
            assert int(v1["robots_online"]) == N

            # three robots see a fire; an operator task gets plans for drone and humanoid robots
            for rid in ("sim_000", "sim_001", "sim_002"):
                sim.add_reporter(rid)
            assert spin_until(executor, sim.report_publishers_matched, timeout=30)
            reports0 = int(diag.fresh(executor, DIAG)["reports"])
            for rid in ("sim_000", "sim_001", "sim_002"):
                sim.publish_report(rid, "on fire", FIRE)
            # the manager under 100 heartbeats/s may take a moment: wait until it has all three
            assert spin_until(executor, lambda: diag.get(DIAG, "reports") >= reports0 + 3, timeout=30)
            client = node.create_client(SubmitTask, "/fleet/submit_task")
            assert spin_until(executor, client.service_is_ready, 20)
            future = client.call_async(SubmitTask.Request(task="Put out the fire"))
            assert spin_until(executor, future.done, 30)
            res = future.result()
            assert res.success, (res.message, manager.output())
            assert "3 reports" in res.message
            assert spin_until(executor, lambda: len(sim.plans_for(res.plan_ids)) == len(res.plan_ids), 20)
            holders = {p.robot_id: p for p in sim.plans_for(res.plan_ids).values()}
            assert {sim.robots[r].robot_type for r in holders} <= {"drone", "humanoid"}
            steps = {(s.order, s.description) for p in holders.values() for s in p.steps}
            assert {s.robot_type for p in holders.values() for s in p.steps} == {"drone", "humanoid"}

            # ten robots die, the plan holders among them: online count drops, the steps move
            others = [f"sim_{i:03d}" for i in range(40, 50) if f"sim_{i:03d}" not in holders]
            dead = set(holders) | set(others[: 10 - len(holders)])
            t0 = time.monotonic()
            for rid in dead:
                sim.robots[rid].alive = False
            assert spin_until(executor, lambda: diag.get(DIAG, "robots_online") == N - len(dead), timeout=30)
            assert time.monotonic() - t0 >= 2.5

            def repaired() -> bool:
                latest = [r.latest_plans().get(f"{res.plan_ids[0].split('/')[0]}/{r.robot_id}") for r in sim.robots.values()]
                live = [p for p in latest if p is not None and p.status != ActionPlan.STATUS_CANCELLED]
                moved = {(s.order, s.description) for p in live for s in p.steps}
                return moved == steps and not ({p.robot_id for p in live} & dead)

            assert spin_until(executor, repaired, timeout=20)
            assert diag.get(DIAG, "steps_unassignable") == 0
            for rid in holders:
                if rid in dead:
                    last = [p for _, p in sim.robots[rid].plans if p.plan_id in res.plan_ids][-1]
                    assert last.status == ActionPlan.STATUS_CANCELLED
        finally:
            executor.remove_node(sim)
            sim.destroy_node()
