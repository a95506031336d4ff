"""The camera watch: a node whose camera topic has no publisher, or publishers whose frames never
arrive (a stalled driver, frames too large for the transport), says so, once per change."""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image

from ember.ros.camera_watch import NO_PUBLISHER, OK, SILENT, CameraWatch
from ember.ros.qos import CAMERA_QOS, DIAGNOSTICS_QOS
from tests.fleet.helpers import Diagnostics, node_process
from tests.ros.helpers import ros_node, spin_until

TOPICS = "/r/camera/image_raw and /r/camera/image_raw/compressed"


def _watch(warn: float = 10.0) -> CameraWatch:
    return CameraWatch(TOPICS, warn, started=100.0)


def test_no_publisher_is_reported_once_after_the_grace_time():
    w = _watch()
    assert w.check(0, 105.0) == (OK, "")  # a camera starting late gets warn_after_s
    state, message = w.check(0, 110.5)
    assert state == NO_PUBLISHER and "no camera publishes on /r/camera/image_raw" in message and "remapped" in message
    assert w.check(0, 140.0) == (NO_PUBLISHER, ""), "reported once, not at every check"


def test_publishers_without_frames_name_the_transport_limit():
    w = _watch()
    w.check(1, 101.0)
    assert w.check(1, 108.0) == (OK, "")
    state, message = w.check(1, 111.5)
    assert state == SILENT and "1 publisher(s)" in message and "FASTDDS_DEFAULT_PROFILES_FILE" in message
    w.frame(112.0)
    state, message = w.check(1, 112.5)
    assert state == OK and message == f"camera frames arriving on {TOPICS} again (was: no frames)"


def test_a_camera_that_stops_is_reported_after_its_last_frame():
    w = _watch(2.0)
    w.check(1, 100.5)
    for t in (101.0, 101.5, 102.0, 103.0):
        w.frame(t)
        assert w.check(1, t + 0.1) == (OK, "")
    assert w.check(1, 104.5)[0] == OK
    assert w.check(1, 105.5)[0] == SILENT  # 2.5 s after its last frame
    assert w.check(0, 105.6)[0] == SILENT, "the driver just went away: it gets the grace time"
    assert w.check(0, 107.7)[0] == NO_PUBLISHER


def test_zero_turns_the_watch_off():
    w = _watch(0.0)
    assert w.check(0, 1000.0) == (OK, "") and w.check(3, 2000.0) == (OK, "")


@pytest.mark.ros
def test_the_node_says_what_keeps_its_camera_frames_away(tiny_bundle, tmp_path):
    """Real node process, real DDS: no publisher -> one warning and /diagnostics WARN; a publisher whose
    frames never come (a stalled driver) -> the other warning; frames -> a note and OK again."""
    params = {"robot_id": "cw_bot", "robot_type": "drone", "bundle": str(tiny_bundle), "max_rate_hz": 0.0,
              "diagnostics_period_s": 0.2, "camera_silence_warn_s": 1.0}
    name = "ember/cw_bot/incident_node"
    with node_process("ember.ros.incident_node", "/cw_bot/incident_node", params, tmp_path) as proc, \
            ros_node("camera_watch_test") as (node, executor):
        diag, levels = Diagnostics(node), {}
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: levels.update({s.name: s.level for s in m.status}), DIAGNOSTICS_QOS)
        proc.wait_for_line(r"no camera publishes on /cw_bot/camera/image_raw and /cw_bot/camera/image_raw/compressed",
                           timeout=30)
        assert spin_until(executor, lambda: diag.latest.get(name, {}).get("camera") == "no publisher"
                          and levels.get(name) == DiagnosticStatus.WARN, 20), diag.latest.get(name)

        pub = node.create_publisher(Image, "/cw_bot/camera/image_raw", CAMERA_QOS)  # up, but sends nothing
        proc.wait_for_line(r"1 publisher\(s\) on /cw_bot/camera/image_raw .* but no frame for \d+ s: .*stalled",
                           timeout=30)
        assert spin_until(executor, lambda: diag.latest.get(name, {}).get("camera") == "no frames", 20)
        assert diag.latest[name]["camera_publishers"] == "1"

        frame = Image(width=8, height=8, encoding="rgb8", step=24, data=bytes(8 * 8 * 3))

        def publishing_until_ok() -> bool:
            frame.header.stamp = node.get_clock().now().to_msg()
            pub.publish(frame)
            return diag.latest.get(name, {}).get("camera") == "ok" and levels.get(name) == DiagnosticStatus.OK

        assert spin_until(executor, publishing_until_ok, 30), diag.latest.get(name)
        proc.wait_for_line(r"camera frames arriving on /cw_bot/camera/image_raw .* again \(was: no frames\)", timeout=10)
        warnings = [ln for ln in proc.lines if "no camera publishes" in ln or "but no frame for" in ln]
        assert len(warnings) == 2, warnings
