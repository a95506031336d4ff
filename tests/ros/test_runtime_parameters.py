"""`ros2 param set` on the robot-side nodes (the SetParameters service), for every parameter they
declare: a change either takes effect or is refused with a reason (read-only, out of range), never
accepted and then ignored; the same limits refuse a bad value in a params file at start."""

from __future__ import annotations

import math

import cv2
import pytest
from ember_msgs.msg import IncidentAnalysis, RobotSelection
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ember.ros.conversions import numpy_to_image
from ember.ros.qos import CAMERA_QOS, REPORT_QOS
from tests.ros.helpers import ros_node, spin_until
from tests.ros.node_helpers import (
    RCLPY_OWN_PARAMETERS,
    Heartbeats,
    list_parameters,
    node_process,
    sim_time_jpeg_camera,
    startup_refusal,
    time_msg,
    try_set_parameter,
)

pytestmark = pytest.mark.ros
NS = "/param_bot"
NODE = f"{NS}/incident_node"

INCIDENT_READ_ONLY = {
    "robot_id": "other_bot",
    "robot_type": "legged",
    "bundle": "/elsewhere",
    "threads": 2,
    "heartbeat_period_s": 1.0,
    "diagnostics_period_s": 2.0,
    "bundle_check_period_s": 1.0,
    "camera_silence_warn_s": 3.0,
    "image_topic": "/x/image",
    "compressed_topic": "/x/image/compressed",
    "incident_topic": "x/incident",
    "selection_topic": "x/selection",
    "plan_topic": "x/plan",
    "analyze_service": "x/analyze",
    "reload_service": "x/reload",
    "status_topic": "/x/status",
    "battery_topic": "/x/battery",
}
INCIDENT_AT_RUN_TIME = {
    "default_task": "Count the people on the roof",
    "max_rate_hz": 5.0,
    "processing_delay_s": 0.0,
    "battery": 0.25,
    "available": False,
    "max_new_tokens": 1,
}
INCIDENT_OUT_OF_RANGE = [
    ("max_rate_hz", -1.0),
    ("max_rate_hz", math.nan),
    ("processing_delay_s", -0.5),
    ("processing_delay_s", math.inf),
    ("battery", 1.5),
    ("battery", -0.1),
    ("battery", math.nan),
    ("max_new_tokens", -3),
]


@pytest.fixture(scope="module")
def robot(tiny_bundle, tmp_path_factory):
    params = {"robot_id": "param_bot", "robot_type": "drone", "bundle": str(tiny_bundle), "max_rate_hz": 0.0, "heartbeat_period_s": 0.2}
    with node_process("ember.ros.incident_node", NODE, params, tmp_path_factory.mktemp("params")) as proc:
        yield proc


def test_every_incident_node_parameter_is_either_applied_at_run_time_or_refused_as_read_only(robot, engine_for_tests, shared_data):
    with ros_node("param_user") as (node, executor):
        declared = list_parameters(node, executor, NODE) - RCLPY_OWN_PARAMETERS
        assert declared == set(INCIDENT_READ_ONLY) | set(INCIDENT_AT_RUN_TIME), "parameter list changed: classify the new ones here"
        for name, value in INCIDENT_READ_ONLY.items():
            res = try_set_parameter(node, executor, NODE, name, value)
            assert not res.successful and "read-only" in res.reason, (name, res.reason)
        for name, value in INCIDENT_OUT_OF_RANGE:
            res = try_set_parameter(node, executor, NODE, name, value)
            assert not res.successful and name in res.reason, (name, value, res.reason)
        for name, value in INCIDENT_AT_RUN_TIME.items():
            res = try_set_parameter(node, executor, NODE, name, value)
            assert res.successful, (name, res.reason)

        # ... and the accepted ones take effect
        beats = Heartbeats(node)
        assert spin_until(executor, lambda: any(b.battery == 0.25 and not b.available for b in beats.of("param_bot")), 15), robot.output()
        incidents: list[IncidentAnalysis] = []
        selections: list[RobotSelection] = []
        node.create_subscription(IncidentAnalysis, f"{NS}/ember/incident", incidents.append, REPORT_QOS)
        node.create_subscription(RobotSelection, f"{NS}/ember/robot_selection", selections.append, REPORT_QOS)
        cam = node.create_publisher(Image, f"{NS}/camera/image_raw", CAMERA_QOS)
        assert spin_until(executor, lambda: cam.get_subscription_count() > 0 and node.count_publishers(f"{NS}/ember/incident") > 0, 30)
        bgr = cv2.resize(cv2.imread(str(shared_data / "incidents" / "images" / "example_flood.jpg")), (64, 48))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for sec in range(900, 905):
            cam.publish(numpy_to_image(rgb, "rgb8", header=Header(stamp=time_msg(sec), frame_id="cam")))
            if spin_until(executor, lambda s=sec: any(m.header.stamp.sec == s for m in incidents), 5):
                break
        got = next(m for m in incidents if m.header.stamp.sec >= 900)
        assert spin_until(executor, lambda: any(s.header.stamp == got.header.stamp for s in selections), 5)
        sel = next(s for s in selections if s.header.stamp == got.header.stamp)
        assert sel.task == INCIDENT_AT_RUN_TIME["default_task"]
        expected = engine_for_tests.analyze(rgb, task=INCIDENT_AT_RUN_TIME["default_task"], max_new_tokens=1)
        assert got.description == expected.text


@pytest.fixture(scope="module")
def engine_for_tests(tiny_bundle):
    from ember.engine import EmberEngine

    return EmberEngine(tiny_bundle)


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_rate_hz", -1.0), ("battery", 2.0), ("heartbeat_period_s", 0.0), ("threads", 0), ("processing_delay_s", math.inf),
     ("bundle_check_period_s", -1.0), ("camera_silence_warn_s", -1.0)],
)
def test_an_out_of_range_value_in_the_params_file_stops_the_incident_node_with_its_name(name, value, tiny_bundle, tmp_path):
    params = {"robot_id": "bad_bot", "robot_type": "drone", "bundle": str(tiny_bundle), name: value}
    rc, out = startup_refusal("ember.ros.incident_node", "/bad_bot/incident_node", params, tmp_path)
    assert rc == 1 and name in out, (rc, out)


CAMERA = "/param_cam/camera"
CAMERA_READ_ONLY = {"images": "/elsewhere", "video": "/x.mp4", "topic": "/x/image", "format": "raw", "loop": False, "count": 3}


@pytest.fixture(scope="module")
def camera(shared_data, tmp_path_factory):
    with sim_time_jpeg_camera(CAMERA, 20.0, shared_data / "incidents" / "images", tmp_path_factory.mktemp("camera")) as proc:
        yield proc


def test_every_camera_parameter_is_either_applied_at_run_time_or_refused_as_read_only(camera):
    from tests.ros.node_helpers import SimClock, stamp_s

    with ros_node("camera_param_user") as (node, executor):
        declared = list_parameters(node, executor, CAMERA) - RCLPY_OWN_PARAMETERS
        assert declared == set(CAMERA_READ_ONLY) | {"rate_hz", "frame_id"}, "parameter list changed: classify the new ones here"
        for name, value in CAMERA_READ_ONLY.items():
            res = try_set_parameter(node, executor, CAMERA, name, value)
            assert not res.successful and "read-only" in res.reason, (name, res.reason)
        for value in (0.0, -2.0, math.nan, math.inf):
            res = try_set_parameter(node, executor, CAMERA, "rate_hz", value)
            assert not res.successful and "rate_hz" in res.reason, (value, res.reason)
        assert try_set_parameter(node, executor, CAMERA, "rate_hz", 2.0).successful
        assert try_set_parameter(node, executor, CAMERA, "frame_id", "front_optical").successful

        # the new rate and frame_id show in the frames (simulated time: 2 Hz, down from 20; a frame is
        # stamped when its timer callback runs, which may be a few clock steps late on a busy machine)
        frames: list[CompressedImage] = []
        node.create_subscription(CompressedImage, f"{CAMERA.rsplit('/', 1)[0]}/camera/image_raw/compressed", frames.append, CAMERA_QOS)
        clock = SimClock(node, executor, start=10.0)
        clock.wait_for_subscribers()
        assert clock.spin_until(lambda: sum(f.header.frame_id == "front_optical" for f in frames) >= 4, 30, 0.02), camera.output()
        stamps = [stamp_s(f.header.stamp) for f in frames if f.header.frame_id == "front_optical"]
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert 0.4 <= sum(gaps[1:]) / len(gaps[1:]) <= 0.75, stamps


def test_an_out_of_range_camera_rate_in_the_params_file_stops_it_with_its_name(shared_data, tmp_path):
    params = {"images": str(shared_data / "incidents" / "images"), "rate_hz": -3.0}
    rc, out = startup_refusal("ember.ros.camera", "/bad_cam/camera", params, tmp_path)
    assert rc not in (None, 0) and "rate_hz" in out, (rc, out)


def test_every_fleet_manager_parameter_is_refused_as_read_only(tmp_path):
    """The manager reads its parameters once, at start: `ros2 param set` was accepted and then
    ignored (a new heartbeat_timeout_s never applied). Now every one is refused as read-only."""
    from tests.fleet.helpers import fleet_manager_process

    changes = {"heartbeat_timeout_s": 9.0, "low_battery": 0.5, "robot_ids": ["x"], "bundle": "/elsewhere",
               "status_topic": "/x/status", "max_robot_types": 2}
    with fleet_manager_process(tmp_path, {"task_wait_s": 1.0}), ros_node("manager_param_test") as (node, executor):
        declared = list_parameters(node, executor, "/fleet_manager") - RCLPY_OWN_PARAMETERS
        assert set(changes) <= declared and len(declared) >= 20, declared
        for name in sorted(declared):
            res = try_set_parameter(node, executor, "/fleet_manager", name, changes.get(name, 1.0))
            assert not res.successful and "read-only" in res.reason, (name, res.reason)
