"""How Ember's executables stop on SIGINT/SIGTERM: the main thread destroys the nodes while their
context is still valid, then shuts it down, and the process exits 0.

rclpy's own signal handlers shut the context down from their thread while the main thread, woken
by that, destroyed the nodes: under CPU load a native crash at stop (SIGSEGV in Service.destroy in
ember-camera, in GuardCondition.trigger in the fleet manager). The stop must also come while the
executor waits on a timer of a paused simulated clock (use_sim_time, no /clock), the camera's only
timer. The crash itself is rare (a few per hundred stops under load: scripts/stop_stress.py counts
them); the order that prevents it is checked here on every stop.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.fleet.helpers import Proc
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros


def stop_and_check(proc: Proc, sig: int) -> str:
    """Wait for READY, send `sig`; assert exit 0 and every node destroyed on a valid context."""
    try:
        proc.wait_for_line(r"^READY$", timeout=90)
    finally:
        rc = proc.stop(sig)
    out = proc.output()
    assert rc == 0, out
    destroyed = re.findall(r"^DESTROYED (\S+) context_ok=(\w+)$", out, re.M)
    assert destroyed, out
    assert all(ok == "True" for _, ok in destroyed), out
    assert "Traceback" not in out, out
    return out


def probe(module: str, *args: str) -> Proc:
    return Proc(["-m", "tests.ros.stop_probe", module, *args])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_camera_on_a_paused_sim_clock_stops_destroying_its_node_before_the_context(shared_data: Path, sig: int):
    """use_sim_time with no /clock: the camera's frame timer never fires, its executor waits."""
    images = str(shared_data / "incidents" / "images")
    stop_and_check(probe("camera", "--images", images, "--ros-args", "-r", "__ns:=/stop_cam", "-p", "use_sim_time:=true"), sig)


def test_a_camera_with_a_frame_count_stops_the_same_way(shared_data: Path):
    images = str(shared_data / "incidents" / "images")
    stop_and_check(probe("camera", "--images", images, "--count", "100000", "--ros-args", "-r", "__ns:=/stop_cam2"),
                   signal.SIGINT)


def test_the_incident_node_stops_destroying_its_node_before_the_context(tiny_bundle: Path):
    stop_and_check(
        probe("incident_node", "--ros-args", "-r", "__ns:=/stop_bot", "-p", f"bundle:={tiny_bundle}",
              "-p", "robot_type:=wheeled"),
        signal.SIGTERM,
    )


def test_the_fleet_manager_stops_destroying_its_nodes_before_the_context():
    out = stop_and_check(probe("fleet_manager", "--ros-args", "-r", "__node:=stop_manager"), signal.SIGINT)
    assert "DESTROYED stop_manager_tasks" in out  # its helper node, spun by a thread of its own


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_client_without_an_ember_spin_is_still_interrupted(sig: int):
    """ember-task watch spins an executor of its own: a stop signal interrupts it (KeyboardInterrupt,
    as Python's default handler does) and it exits 0."""
    proc = Proc(["-m", "ember.ros.operator", "watch"])
    try:
        with ros_node("stop_client_probe") as (node, executor):  # its subscription seen: it is spinning
            assert spin_until(executor, lambda: node.count_subscribers("/fleet/status") > 0, 60), proc.output()
    finally:
        rc = proc.stop(sig)
    assert rc == 0, proc.output()
