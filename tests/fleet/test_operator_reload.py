"""`ember-task reload`: the operator asks the running fleet to load the bundle swapped in at its path
(a real incident node on the tiny bundle, the fleet manager, own processes, real DDS)."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.fleet.helpers import fleet_manager_process, node_process
from tests.fleet.rollout import swap_in, with_version
from tests.fleet.test_operator_cli import run_task
from tests.ros.helpers import ros_node

pytestmark = pytest.mark.ros
V1 = "tiny-random-int8"
V2 = "tiny-random-int8-v2"


def test_reload_calls_every_heartbeating_robot_and_the_manager_and_says_what_each_loaded(tiny_bundle, tmp_path):
    live = shutil.copytree(tiny_bundle, tmp_path / "robot" / "bundle")
    new = with_version(tiny_bundle, tmp_path / "new", V2)
    robot = {"robot_id": "reload_bot", "robot_type": "drone", "bundle": str(live), "max_rate_hz": 0.0,
             "bundle_check_period_s": 0.0}
    manager = {"heartbeat_timeout_s": 3.0, "bundle": str(live), "bundle_check_period_s": 0.0}
    with node_process("ember.ros.incident_node", "/reload_bot/incident_node", robot, tmp_path) as node_proc, \
            fleet_manager_process(tmp_path, manager) as manager_proc, ros_node("reload_operator") as (node, executor):
        swap_in(new, live)
        rc, lines = run_task(executor, ["reload"], timeout=90)
        assert rc == 0, (lines, node_proc.output(), manager_proc.output())
        assert len(lines) == 2, lines
        assert re.fullmatch(rf"reload_bot: ok: model reloaded: {V1} -> {V2} \(.*\)", lines[0]), lines
        assert re.fullmatch(rf"fleet_manager: ok: text robot selector reloaded: {V1} -> {V2} \(.*\)", lines[1]), lines
        node_proc.wait_for_line(rf"model reloaded: {V1} -> {V2}", timeout=10)

        # a fresh ember-task process discovers reload_bot's service in ~3 s, longer on a loaded CI machine
        rc, lines = run_task(executor, ["reload", "--robots", "reload_bot,ghost_1", "--timeout", "15"], timeout=90)
        assert rc == 1, lines
        assert lines[0].startswith(f"reload_bot: ok: model unchanged: {V2} already running"), lines
        assert lines[1:] == ["ghost_1: no answer: no /ghost_1/ember/reload_model service within 15 s"], lines

        rc, lines = run_task(executor, ["reload", "--manager"], timeout=60)
        assert rc == 0 and len(lines) == 1 and lines[0].startswith("fleet_manager: ok: "), lines


def test_reload_without_a_fleet_exits_3_and_a_bad_robot_id_is_a_usage_error(tmp_path):
    with ros_node("reload_nobody") as (_node, executor):
        rc, lines = run_task(executor, ["reload", "--listen", "0.5", "--timeout", "2"], timeout=60)
        assert rc == 3, lines
        assert any("no robot heartbeat on /fleet/status within 2 s" in line for line in lines), lines
        assert "fleet_manager: no answer: no /fleet/reload_model service within 2 s" in lines, lines
        rc, lines = run_task(executor, ["reload", "--robots", "drone-1"], timeout=60)
        assert rc == 2 and lines == ["ember-task: invalid robot id(s): drone-1"], lines
