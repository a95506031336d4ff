"""`ember-fleet` (composed: one process, one executor) and `ember-camera` as a user runs them,
and `python -m ember.demo` (what `make demo` runs) on the tiny bundle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from ember_msgs.msg import IncidentAnalysis
from sensor_msgs.msg import CompressedImage

from ember.ros.conversions import compressed_to_rgb
from ember.ros.qos import CAMERA_QOS, REPORT_QOS
from tests.fleet.helpers import ROOT, Proc, alive, assert_no_orphans, exit_code, started_pids, write_fleet
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros


def test_composed_fleet_with_replay_cameras_reports_and_stops_on_sigterm(tiny_bundle, tmp_path, shared_data):
    cfg = write_fleet(
        tmp_path / "fleet.yaml",
        tiny_bundle,
        [("drone_1", "drone"), ("boat_1", "underwater")],
        inference={"max_rate_hz": 5.0},
        cameras={"enabled": True, "images": str(shared_data / "incidents" / "images"), "rate_hz": 5.0, "format": "jpeg"},
    )
    proc = Proc(["-m", "ember.ros.fleet", "--config", str(cfg)])
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        assert len({line.split()[2] for line in proc.lines if line.startswith("STARTED")}) == 1  # one process
        seen: dict[str, IncidentAnalysis] = {}
        with ros_node("composed_client") as (node, executor):
            for rid in ("drone_1", "boat_1"):
                node.create_subscription(IncidentAnalysis, f"/{rid}/ember/incident", lambda m: seen.setdefault(m.robot_id, m), REPORT_QOS)
            assert spin_until(executor, lambda: len(seen) == 2, timeout=60), proc.output()
        assert seen["boat_1"].header.frame_id == "boat_1/camera"
    finally:
        rc = proc.stop(signal.SIGTERM)
    assert rc == 0, proc.output()
    assert "ember-fleet: stopped" in proc.output()
    assert "Traceback" not in proc.output()


def test_composed_fleet_stops_cleanly_when_its_terminal_closes(tiny_bundle, tmp_path):
    """SIGHUP (a closed terminal, a dropped ssh session) is a stop like SIGTERM: exit 0 after the
    nodes are destroyed, not the default 'killed by SIGHUP' (exit 129) with no shutdown."""
    proc = _one_robot_fleet(tiny_bundle, tmp_path, "composed")
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
    finally:
        rc = proc.stop(signal.SIGHUP)
    assert rc == 0, proc.output()
    assert "ember-fleet: stopped" in proc.output()
    assert "Traceback" not in proc.output()


def test_ember_fleet_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "fleet.yaml"
    bad.write_text("bundle: b\nrobots:\n  - {id: r1, type: submarine}\n")
    res = subprocess.run([sys.executable, "-m", "ember.ros.fleet", "--config", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "unknown robot type 'submarine'" in res.stderr


def test_ember_camera_replays_a_directory_as_jpeg_until_sigint(shared_data):
    images = shared_data / "incidents" / "images"
    proc = Proc(["-m", "ember.ros.camera", "--images", str(images), "--rate", "20", "--topic", "/cam_test/image/compressed",
                 "--format", "jpeg", "--frame-id", "cam_test"])
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        frames: list[CompressedImage] = []
        with ros_node("camera_sink") as (node, executor):
            node.create_subscription(CompressedImage, "/cam_test/image/compressed", frames.append, CAMERA_QOS)
            assert spin_until(executor, lambda: len(frames) >= 3, timeout=30), proc.output()
        assert frames[0].header.frame_id == "cam_test" and frames[0].format == "jpeg"
        assert compressed_to_rgb(frames[0]).ndim == 3
        assert frames[-1].header.stamp.sec > 0
    finally:
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_ember_camera_without_loop_ends_by_itself(tmp_path, shared_data):
    import shutil

    for name in ("example_fire.jpg", "example_flood.jpg"):
        shutil.copy(shared_data / "incidents" / "images" / name, tmp_path / name)
    res = subprocess.run(
        [sys.executable, "-m", "ember.ros.camera", "--images", str(tmp_path), "--rate", "20", "--no-loop", "--topic", "/x/img"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "done after 2 frames" in res.stderr
    res = subprocess.run([sys.executable, "-m", "ember.ros.camera", "--images", str(tmp_path / "none")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "does not exist" in res.stderr
    for bad, message in ((["--rate", "nan"], "rate_hz must be a finite number > 0, not nan"),
                         (["--rate", "inf"], "rate_hz must be a finite number > 0, not inf"),
                         (["--count", "-3"], "count must be >= 0")):
        res = subprocess.run([sys.executable, "-m", "ember.ros.camera", "--images", str(tmp_path), *bad],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and message in res.stderr, (bad, res.returncode, res.stderr)
        assert "Traceback" not in res.stderr


def test_demo_runs_the_five_robot_fleet_and_exits_0(tiny_bundle, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "ember.demo", "--config", "config/fleet.yaml", "--bundle", str(tiny_bundle),
         "--log", str(tmp_path / "fleet.log")],
        cwd=ROOT, capture_output=True, text=True, timeout=200,
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr + (tmp_path / "fleet.log").read_text()
    for rid in ("drone_1", "humanoid_1", "wheeled_1", "legged_1", "underwater_1"):
        assert f"{rid} " in out.split("[2/5]")[1].split("[3/5]")[0], rid  # every robot's report
    assert "fused robot selection:" in out
    plans = out.split("[4/5] action plans")[1].split("[5/5]")[0]
    assert "plan task-0001/" in plans and "(new)" in plans
    failover = out.split("[5/5] failover")[1]
    assert "(cancelled)" in failover and ("(new)" in failover or "(updated)" in failover or "ALERT" in failover)
    assert "fleet stopped (exit 0)" in out


def test_demo_without_a_bundle_says_so(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ember.demo", "--bundle", str(tmp_path / "missing")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "no model bundle" in res.stderr and "make bundle" in res.stderr


def _one_robot_fleet(bundle, tmp_path, mode: str) -> Proc:
    """`ember-fleet` in `mode` with the manager and one drone on `bundle` (started, not yet READY)."""
    cfg = write_fleet(tmp_path / "fleet.yaml", bundle, [("drone_1", "drone")])
    return Proc(["-m", "ember.ros.fleet", "--config", str(cfg), "--mode", mode])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_processes_mode_ready_means_every_child_is_up_and_a_signal_stops_all(tiny_bundle, tmp_path, sig):
    """READY only once every child's node exists: a Ctrl-C (or a closed terminal: SIGHUP) right after
    it stops every child cleanly (no KeyboardInterrupt tracebacks from half-imported children), exit 0."""
    proc = _one_robot_fleet(tiny_bundle, tmp_path, "processes")
    pids: dict[str, int] = {}
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        pids = started_pids(proc)
        assert set(pids) == {"/fleet_manager", "/drone_1/incident_node"}
    finally:
        rc = proc.stop(sig, timeout=40)
        assert_no_orphans(pids)
    out = proc.output()
    assert rc == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert out.count("READY") == 1, out  # the children's own READY lines are not passed on
    assert "ember-fleet: stopped" in out


def test_processes_mode_children_stop_when_ember_fleet_is_killed(tiny_bundle, tmp_path):
    """`kill -9` of ember-fleet gives it no chance to stop its children: they stop by themselves
    (the kernel's parent-death signal) instead of running on, orphaned, with the robot's camera."""
    proc = _one_robot_fleet(tiny_bundle, tmp_path, "processes")
    pids: dict[str, int] = {}
    try:
        proc.wait_for_line(r"^READY$", timeout=60)
        pids = started_pids(proc)
        assert len(pids) == 2
        proc.proc.kill()
        proc.proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.stop()
        assert_no_orphans(pids)


def test_processes_mode_exits_1_when_a_node_cannot_start(tmp_path):
    """A missing bundle: the incident node cannot start; ember-fleet says so, stops the other
    children and exits 1 (as in composed mode) instead of running a fleet without robots."""
    cfg = write_fleet(tmp_path / "fleet.yaml", tmp_path / "no_bundle", [("drone_1", "drone")])
    proc = Proc(["-m", "ember.ros.fleet", "--config", str(cfg), "--mode", "processes"])
    rc = exit_code(proc, 90, "ember-fleet kept running without its only robot")
    proc.stop()
    out = proc.output()
    assert rc == 1, out
    assert "cannot start /drone_1/incident_node" in out and "model bundle not found" in out, out
    assert "READY" not in proc.lines, out  # never ready: one node never existed


@pytest.mark.parametrize("mode", ["composed", "processes"])
def test_ember_fleet_refuses_an_unisolated_dds_environment_in_one_line(tiny_bundle, tmp_path, mode):
    """EMBER_REQUIRE_LOCAL_DDS=1 without a ROS_DOMAIN_ID: exit 2 with the reason, before any
    node (or child) starts; no traceback."""
    cfg = write_fleet(tmp_path / "fleet.yaml", tiny_bundle, [("drone_1", "drone")])
    env = {k: v for k, v in os.environ.items() if k != "ROS_DOMAIN_ID"}
    res = subprocess.run([sys.executable, "-m", "ember.ros.fleet", "--config", str(cfg), "--mode", mode],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "ROS_DOMAIN_ID must be set" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert "STARTED" not in res.stdout


def test_composed_fleet_stopped_while_starting_exits_0(tiny_bundle, tmp_path):
    """Ctrl-C while the nodes are still being built (a real bundle loads for seconds per robot) is a
    stop, not 'cannot start <node>' with exit 1."""
    robots = [(f"drone_{i}", "drone") for i in range(1, 6)]
    cfg = write_fleet(tmp_path / "fleet.yaml", tiny_bundle, robots)
    proc = Proc(["-m", "ember.ros.fleet", "--config", str(cfg)])
    try:
        proc.wait_for_line(r"^STARTED /fleet_manager ", timeout=60)
    finally:
        rc = proc.stop(signal.SIGINT)
    out = proc.output()
    assert rc == 0, out
    assert "cannot start" not in out and "Traceback" not in out, out
    assert "ember-fleet: stopped" in out
