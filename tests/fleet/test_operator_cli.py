"""`ember-task` (the operator's command line) against a fleet manager in its own process and
simulated robots, over real DDS."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from ember_msgs.msg import ActionPlan

from ember.ros.operator import format_plan
from tests.fleet.helpers import ROOT, Proc, fleet_manager_process
from tests.fleet.test_manager_faults import DIAG, FIRE, PARAMS, Fleet
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
EMBER_TASK = str(ROOT / ".venv" / "bin" / "ember-task")


def run_task(executor, args: list[str], timeout: float = 30.0) -> tuple[int, list[str]]:
    """Run `ember-task args` while the test's executor spins (the simulated robots keep beating)."""
    proc = Proc(["-m", "ember.ros.operator", *args])
    exited = spin_until(executor, lambda: proc.proc.poll() is not None, timeout)
    rc = proc.stop()
    assert exited, f"ember-task {args} still running after {timeout}s:\n{proc.output()}"
    return rc, list(proc.lines)


def test_submit_watch_and_done_over_a_running_fleet(tmp_path):
    with fleet_manager_process(tmp_path, PARAMS) as manager, ros_node("operator_cli_test") as (node, executor):
        fleet = Fleet(node, executor, manager)
        try:
            # no incident reported yet: the manager answers success=false after task_wait_s
            rc, lines = run_task(executor, ["submit", "Put out the fire"])
            assert rc == 1, lines
            assert lines[0].startswith("failed: ") and "no incident" in lines[0], lines

            fleet.report("sim_000", "on fire", FIRE)
            fleet.wait_reports(1)
            rc, lines = run_task(executor, ["submit", "Put out the fire", "--timeout", "20"])
            assert rc == 0, (lines, manager.output())
            assert lines[0].startswith("ok: task-0001 "), lines
            incident = re.fullmatch(r"incident: (\S+)", lines[1]).group(1)
            plan_ids = [m.group(1) for m in (re.fullmatch(r"plan: (\S+)", line) for line in lines[2:]) if m]
            assert plan_ids and len(plan_ids) == len(lines) - 2, lines
            assert spin_until(executor, lambda: set(fleet.sim.plans_for(plan_ids)) == set(plan_ids), 20)
            received = fleet.sim.plans_for(plan_ids)

            # plans and alerts are transient-local: a watcher started now still prints them, one line
            # each: the plans of task-0001 and the alert of the first, failed, submit
            rc, watched = run_task(executor, ["watch", "--count", str(len(plan_ids) + 1)])
            assert rc == 0, watched
            alerts = [line for line in watched if line.startswith("ALERT ")]
            assert alerts == ['ALERT task_failed "Put out the fire" - no incident reported yet'], watched
            plans = [line for line in watched if not line.startswith("ALERT ")]
            assert sorted(plans) == sorted(format_plan(received[pid]) for pid in plan_ids), watched
            for line in plans:
                assert re.match(rf"^plan task-0001/sim_\d+ \(new\) incident {re.escape(incident)}: \d+\. \S", line), line

            rc, lines = run_task(executor, ["done", "task-0001"])
            assert rc == 0, lines
            assert lines == ["done: task-0001 sent on /fleet/task_done"], lines
            assert spin_until(executor, lambda: fleet.diag.get(DIAG, "tasks_finished") == 1, 20), manager.output()

            def all_cancelled() -> bool:
                return all(p.status == ActionPlan.STATUS_CANCELLED for p in fleet.sim.plans_for(plan_ids).values())

            assert spin_until(executor, all_cancelled, 20), fleet.sim.plans_for(plan_ids)
        finally:
            fleet.close()


def test_submit_with_an_unreadable_image_is_a_usage_error(tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_text("not a picture")
    for image, reason in ((bad, "neither JPEG nor PNG"), (tmp_path / "missing.png", "No such file")):
        res = subprocess.run([EMBER_TASK, "submit", "Put out the fire", "--image", str(image)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res
        assert res.stdout == "" and len(res.stderr.splitlines()) == 1, res
        assert res.stderr.startswith(f"ember-task: cannot read image {image}: ") and reason in res.stderr, res.stderr


def test_submit_and_done_without_a_fleet_manager_exit_3():
    for args, name in ((["submit", "Put out the fire"], "/fleet/submit_task"), (["done", "task-0001"], "/fleet/task_done")):
        res = subprocess.run([sys.executable, "-m", "ember.ros.operator", *args, "--timeout", "3"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert res.returncode == 3, res
        assert name in res.stderr and "ROS_DOMAIN_ID" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_large_photo_is_sent_at_most_max_image_side_pixels_wide(tmp_path):
    """A 12 MP phone photo would be 36 MB of raw rgb8 over DDS; it goes at MAX_IMAGE_SIDE, aspect kept."""
    import cv2
    import numpy as np

    from ember.ros.conversions import image_to_numpy
    from ember.ros.operator import MAX_IMAGE_SIDE, load_image

    photo = tmp_path / "photo.jpg"
    rgb = np.zeros((3000, 4000, 3), np.uint8)
    rgb[:, :2000] = (200, 30, 30)  # left half red
    cv2.imwrite(str(photo), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = load_image(str(photo))
    assert (msg.encoding, msg.width, msg.height) == ("rgb8", MAX_IMAGE_SIDE, 960)
    pixels = image_to_numpy(msg)
    assert abs(int(pixels[480, 100, 0]) - 200) < 10 and int(pixels[480, 1200, 0]) < 10  # red stays left
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), rgb[:300, :400])
    assert (load_image(str(small)).width, load_image(str(small)).height) == (400, 300)
