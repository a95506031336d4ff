"""The robot-side nodes under `use_sim_time:=true` with a simulator's /clock (Gazebo, a bag replay):
paused, slower or faster than wall time, and jumping back (a simulation reset, a bag restart).

Heartbeats and /diagnostics tell the fleet that the robot's *process* lives, so they keep their
period in wall time: a paused or slow simulation must not make the manager think the robot died.
Reports carry the source image's (simulated) stamp; the camera replay publishes on simulated time.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from ember_msgs.msg import IncidentAnalysis, RobotSelection
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ember.ros.conversions import numpy_to_image
from ember.ros.qos import CAMERA_QOS, REPORT_QOS
from tests.fleet.helpers import Diagnostics
from tests.ros.helpers import ros_node, spin_until
from tests.ros.node_helpers import Heartbeats, SimClock, node_process, sim_time_jpeg_camera, stamp_s, time_msg

pytestmark = pytest.mark.ros
NS = "/sim_bot"
DIAG = "ember/sim_bot/incident_node"


@pytest.fixture(scope="module")
def sim_robot(tiny_bundle, tmp_path_factory):
    params = {
        "robot_id": "sim_bot",
        "robot_type": "wheeled",
        "bundle": str(tiny_bundle),
        "max_rate_hz": 0.0,
        "heartbeat_period_s": 0.2,
        "diagnostics_period_s": 0.2,
        "use_sim_time": True,
    }
    with node_process("ember.ros.incident_node", f"{NS}/incident_node", params, tmp_path_factory.mktemp("sim")) as proc:
        yield proc


def small_frame(shared_data: Path, stamp: float, frame_id: str = "sim_bot/camera") -> Image:
    bgr = cv2.resize(cv2.imread(str(shared_data / "incidents" / "images" / "example_fire.jpg")), (64, 48))
    header = Header(frame_id=frame_id)
    if stamp:
        header.stamp = time_msg(stamp)
    return numpy_to_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "rgb8", header=header)


class Reports:
    def __init__(self, node) -> None:
        self.incidents: list[IncidentAnalysis] = []
        self.selections: list[RobotSelection] = []
        node.create_subscription(IncidentAnalysis, f"{NS}/ember/incident", self.incidents.append, REPORT_QOS)
        node.create_subscription(RobotSelection, f"{NS}/ember/robot_selection", self.selections.append, REPORT_QOS)


def test_a_paused_simulation_keeps_heartbeats_and_diagnostics_going(sim_robot):
    """Gazebo paused (the /clock stands still): the robot's process is alive, so its heartbeat
    and /diagnostics keep coming at their wall-time period, stamped with the simulated time."""
    with ros_node("paused_sim") as (node, executor):
        clock = SimClock(node, executor, start=100.0)
        beats = Heartbeats(node)
        diag = Diagnostics(node)
        clock.wait_for_subscribers()
        assert clock.spin_until(lambda: any(stamp_s(b.header.stamp) == 100.0 for b in beats.of("sim_bot")), 20), (
            f"no heartbeat stamped with the simulated time:\n{sim_robot.output()}"
        )
        before_beats, before_diag = len(beats.of("sim_bot")), diag.count.get(DIAG, 0)
        ok = clock.spin_until(
            lambda: len(beats.of("sim_bot")) >= before_beats + 5 and diag.count.get(DIAG, 0) >= before_diag + 3, 20
        )
        assert ok, (len(beats.of("sim_bot")) - before_beats, diag.count.get(DIAG, 0) - before_diag, sim_robot.output())
        assert stamp_s(beats.of("sim_bot")[-1].header.stamp) == 100.0


def test_reports_keep_the_simulated_stamps_across_a_reset_and_an_unstamped_frame_near_time_zero(sim_robot, shared_data):
    """A slow simulation that is then reset (the /clock jumps back near zero): frames stamped by the
    simulator are reported with their own stamps before and after the jump, and a frame from a
    driver that leaves the stamp zero, arriving while the simulated time is still tiny, is reported
    too (stamped by the node, never rejected for a 'negative time')."""
    with ros_node("reset_sim") as (node, executor):
        clock = SimClock(node, executor, start=500.0)
        reports = Reports(node)
        cam = node.create_publisher(Image, f"{NS}/camera/image_raw", CAMERA_QOS)
        clock.wait_for_subscribers()
        assert spin_until(executor, lambda: cam.get_subscription_count() > 0 and node.count_publishers(f"{NS}/ember/incident") > 0, 30)

        def reported(stamp: float, sent: Image, step: float) -> IncidentAnalysis | None:
            for _ in range(5):  # best effort may lose a frame
                cam.publish(sent)
                got = clock.spin_until(
                    lambda: any(stamp_s(m.header.stamp) == stamp and m.header.frame_id == sent.header.frame_id for m in reports.incidents), 5, step
                )
                if got:
                    return next(m for m in reports.incidents if stamp_s(m.header.stamp) == stamp)
            return None

        # a slow simulation: 0.001 simulated seconds per spin
        assert reported(500.25, small_frame(shared_data, 500.25), 0.001) is not None, sim_robot.output()
        clock.now = 0.000001  # the reset: back to (almost) zero
        assert reported(0.5, small_frame(shared_data, 0.5, "sim_bot/after_reset"), 0.0) is not None, sim_robot.output()
        n = len(reports.incidents)
        unstamped = small_frame(shared_data, 0.0, "sim_bot/unstamped")
        got = None
        for _ in range(5):
            cam.publish(unstamped)
            if clock.spin_until(lambda: any(m.header.frame_id == "sim_bot/unstamped" for m in reports.incidents[n:]), 5):
                got = next(m for m in reports.incidents[n:] if m.header.frame_id == "sim_bot/unstamped")
                break
        assert got is not None, f"the unstamped frame near simulated time zero was not reported:\n{sim_robot.output()}"
        assert stamp_s(got.header.stamp) > 0
        assert spin_until(executor, lambda: any(s.header.stamp == got.header.stamp for s in reports.selections), 5)
    assert "inference_error" not in sim_robot.output()


@pytest.fixture(scope="module")
def sim_camera(shared_data, tmp_path_factory):
    with sim_time_jpeg_camera("/sim_cam/camera", 10.0, shared_data / "incidents" / "images", tmp_path_factory.mktemp("cam")) as proc:
        yield proc


def test_the_replay_camera_follows_the_simulated_clock_through_a_reset(sim_camera):
    """ember-camera under use_sim_time publishes at rate_hz of simulated time, stamps frames with it,
    and goes on after the /clock jumps back (it does not wait for the old time to come again)."""
    with ros_node("camera_sim_clock") as (node, executor):
        clock = SimClock(node, executor, start=50.0)
        frames: list[CompressedImage] = []
        node.create_subscription(CompressedImage, "/sim_cam/camera/image_raw/compressed", frames.append, CAMERA_QOS)
        clock.wait_for_subscribers()
        assert spin_until(executor, lambda: node.count_publishers("/sim_cam/camera/image_raw/compressed") > 0, 30)
        assert clock.spin_until(lambda: sum(stamp_s(f.header.stamp) >= 50.0 for f in frames) >= 5, 20, 0.01), sim_camera.output()
        after = [stamp_s(f.header.stamp) for f in frames if stamp_s(f.header.stamp) >= 50.0]
        # 10 Hz of simulated time (a frame is stamped when its timer callback runs, which may be a few
        # clock steps late; the next keeps the schedule). Paced by wall time instead, its rate in
        # simulated time would follow how fast this test steps the clock, not 10 Hz.
        assert 6.0 <= (len(after) - 1) / (after[-1] - after[0]) <= 14.0, after
        clock.now = 3.0  # the simulation resets
        n = len(frames)
        assert clock.spin_until(lambda: sum(3.0 <= stamp_s(f.header.stamp) < 50.0 for f in frames[n:]) >= 5, 20, 0.01), (
            f"the camera stalled after the clock jumped back:\n{sim_camera.output()}"
        )
