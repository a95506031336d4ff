"""`ember-fleet --mode processes` respawns a node that dies after READY (fleet.yaml `respawn`), over
real DDS with the tiny bundle: a SIGKILLed incident node comes back (the same command line, params
file and environment) and heartbeats again; a crash-looping node is given up after max_restarts;
Ctrl-C while a node waits for its respawn stops cleanly. Composed mode says it cannot respawn."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from ember_msgs.msg import RobotStatus

from ember.ros.qos import STATUS_QOS
from tests.fleet.helpers import Proc, assert_no_orphans, exit_code, started_pids, write_fleet
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
ROBOT = "/drone_1/incident_node"


def _fleet(tmp_path: Path, bundle: Path, respawn: dict, *args: str, mode: str = "processes", **sections) -> Proc:
    """`ember-fleet` with one drone (and the manager, unless `--no-manager` is in `args`); `sections`
    (cameras=...) go into the fleet file."""
    cfg = write_fleet(tmp_path / "fleet.yaml", bundle, [("drone_1", "drone")], respawn=respawn,
                      inference={"heartbeat_period_s": 0.2}, **sections)
    return Proc(["-m", "ember.ros.fleet", "--config", str(cfg), "--mode", mode, *args])


def _stopped_cleanly(proc: Proc) -> str:
    """SIGINT to ember-fleet: exit 0, no child left, no traceback; its output."""
    rc = proc.stop(signal.SIGINT, timeout=20)
    assert_no_orphans(started_pids(proc))
    out = proc.output()
    assert rc == 0 and "Traceback" not in out, out
    return out


def _process_view(pid: int) -> tuple[list[str], dict[str, str]]:
    """A running process's command line and environment, as the kernel has them."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    env = dict(e.split(b"=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0"))
    return [a.decode() for a in argv], {k.decode(): v.decode() for k, v in env.items()}


def _stamp(msg: RobotStatus) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_a_killed_incident_node_comes_back_with_the_same_parameters_and_environment(tiny_bundle, tmp_path):
    proc = _fleet(tmp_path, tiny_bundle, {"enabled": True, "delay_s": 0.5, "max_restarts": 3, "window_s": 60.0})
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        old = started_pids(proc)[ROBOT]
        argv, env = _process_view(old)
        beats: list[RobotStatus] = []
        with ros_node("respawn_watch") as (node, executor):
            node.create_subscription(RobotStatus, "/fleet/status", beats.append, STATUS_QOS)
            assert spin_until(executor, lambda: any(b.robot_id == "drone_1" for b in beats), timeout=30), proc.output()
            killed_at = time.time()
            os.kill(old, signal.SIGKILL)  # a segfault, the OOM killer
            proc.wait_for_line(rf"{ROBOT} exited with code -9", timeout=10)
            proc.wait_for_line(rf"respawning {ROBOT} in 0\.5s \(restart 1 of at most 3 within 60s\)", timeout=10)
            new = int(proc.wait_for_line(rf"^STARTED {ROBOT} pid=(?!{old}\b)(\d+)", timeout=20)[1])
            assert _process_view(new) == (argv, env)  # same params file, ROS_DOMAIN_ID, discovery, profile...
            assert Path(argv[-1]).is_file()
            assert spin_until(
                executor, lambda: any(b.robot_id == "drone_1" and _stamp(b) > killed_at for b in beats), timeout=30
            ), proc.output()
            proc.wait_for_line(rf"{ROBOT} is up again", timeout=10)
    finally:
        rc = proc.stop(signal.SIGINT, timeout=40)
        assert_no_orphans(started_pids(proc))
    out = proc.output()
    assert rc == 0, out
    assert proc.lines.count("READY") == 1, out  # the respawned child's own READY is not passed on
    assert "Traceback" not in out and "ember-fleet: stopped" in out, out


def test_a_crash_looping_node_is_given_up_after_max_restarts(tiny_bundle, tmp_path):
    """A broken model update: every restart fails. After max_restarts within window_s ember-fleet
    gives up on the node with one line; on a robot computer (its only node) it then exits 1."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    proc = _fleet(tmp_path, bundle, {"enabled": True, "delay_s": 0.1, "max_restarts": 2, "window_s": 60.0}, "--no-manager")
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        shutil.rmtree(bundle)
        os.kill(started_pids(proc)[ROBOT], signal.SIGKILL)
        rc = exit_code(proc, 60, "ember-fleet kept restarting")
    finally:
        proc.stop()
    out = proc.output()
    assert rc == 1, out
    assert sum(line.startswith(f"STARTED {ROBOT} ") for line in proc.lines) == 3, out  # the first + 2 restarts
    gave_up = [line for line in proc.lines if "giving up" in line]
    assert gave_up == [
        f"ember-fleet: {ROBOT} exited 3 times within 60s (respawn.max_restarts 2); giving up on it"
    ], out
    assert "model bundle not found" in out and "Traceback" not in out, out


def test_sigint_while_a_node_waits_for_its_respawn_stops_cleanly(tiny_bundle, tmp_path):
    """Ctrl-C during the respawn delay: the node is not started again, ember-fleet exits 0 (also
    when that node was the only one: waiting for a respawn is not 'every node has exited')."""
    proc = _fleet(tmp_path, tiny_bundle, {"enabled": True, "delay_s": 600.0}, "--no-manager")
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        os.kill(started_pids(proc)[ROBOT], signal.SIGKILL)
        proc.wait_for_line(rf"respawning {ROBOT} in 600s", timeout=10)
    finally:
        out = _stopped_cleanly(proc)
    assert sum(line.startswith(f"STARTED {ROBOT} ") for line in proc.lines) == 1, out
    assert "ember-fleet: stopped" in out, out


def test_composed_mode_says_in_one_line_that_it_cannot_respawn(tmp_path):
    """Printed before any node starts (here a node that cannot start: no bundle, exit 1 as always)."""
    proc = _fleet(tmp_path, tmp_path / "no_bundle", {"enabled": True}, "--no-manager", mode="composed")
    try:
        rc = proc.proc.wait(timeout=60)
    finally:
        proc.stop()
    out = proc.output()
    assert rc == 1 and "cannot start /drone_1/incident_node" in out, out
    notes = [line for line in proc.lines if "respawn" in line]
    assert notes == ["ember-fleet: respawn (fleet.yaml) needs --mode processes: in composed mode every node shares "
                     "this process and is not restarted"], out


def test_a_camera_that_finishes_its_images_is_not_respawned(tiny_bundle, shared_data, tmp_path):
    """Exit code 0 by itself is a node that is done (a replay camera with `loop: false`), not a crash."""
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted((shared_data / "incidents" / "images").iterdir())[:3]:
        shutil.copy(src, images / src.name)
    proc = _fleet(tmp_path, tiny_bundle, {"enabled": True, "delay_s": 0.1}, "--no-manager",
                  cameras={"enabled": True, "images": str(images), "rate_hz": 5.0, "loop": False})
    camera = "/drone_1/camera"
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        proc.wait_for_line(rf"{camera} finished \(exit code 0\): not respawned", timeout=30)
    finally:
        out = _stopped_cleanly(proc)
    assert sum(line.startswith(f"STARTED {camera} ") for line in proc.lines) == 1, out
    assert not any("respawning" in line for line in proc.lines), out
