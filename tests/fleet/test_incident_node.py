"""The incident node in its own process, over real DDS, with the real engine on the tiny bundle.

The "deliberately slow model" is the node's documented `processing_delay_s` parameter: a
fixed delay added to every analysis (as a slower robot computer would), set at run time
over the parameter service.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ember_msgs.msg import IncidentAnalysis, RobotSelection
from ember_msgs.srv import AnalyzeImage, SubmitTask
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ember.labels import INCIDENT_LABELS, ROBOT_TYPES
from ember.ros.conversions import numpy_to_image, rgb_to_compressed
from ember.ros.qos import CAMERA_QOS, REPORT_QOS
from tests.fleet.helpers import Diagnostics, Proc, fleet_manager_process, set_parameter, write_params
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
NS = "/cam_bot"
DIAG = "ember/cam_bot/incident_node"


def photo(shared_data: Path, name: str = "example_fire.jpg", size: tuple[int, int] = (320, 240)) -> np.ndarray:
    bgr = cv2.imread(str(shared_data / "incidents" / "images" / name))
    return cv2.cvtColor(cv2.resize(bgr, size), cv2.COLOR_BGR2RGB)


def header(sec: int, nanosec: int = 0, frame: str = "cam_bot/camera") -> Header:
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


@pytest.fixture(scope="module")
def robot(tiny_bundle, tmp_path_factory):
    params = {
        "robot_id": "cam_bot",
        "robot_type": "drone",
        "bundle": str(tiny_bundle),
        "max_rate_hz": 0.0,
        "processing_delay_s": 0.0,
        "diagnostics_period_s": 0.3,
    }
    pf = write_params(tmp_path_factory.mktemp("robot") / "params.yaml", f"{NS}/incident_node", params)
    proc = Proc(["-m", "ember.ros.incident_node", "--ros-args", "-r", f"__ns:={NS}", "--params-file", str(pf)])
    proc.wait_for_line(r"^READY$", timeout=90)
    yield proc
    assert proc.stop() == 0, proc.output()


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    from ember.engine import EmberEngine

    return EmberEngine(tiny_bundle)


class Client:
    """The test's side: camera publishers, report subscribers, diagnostics."""

    def __init__(self, node, executor) -> None:
        self.node, self.executor = node, executor
        self.raw = node.create_publisher(Image, f"{NS}/camera/image_raw", CAMERA_QOS)
        self.jpeg = node.create_publisher(CompressedImage, f"{NS}/camera/image_raw/compressed", CAMERA_QOS)
        self.incidents: list[tuple[float, IncidentAnalysis]] = []
        self.selections: list[RobotSelection] = []
        node.create_subscription(
            IncidentAnalysis, f"{NS}/ember/incident", lambda m: self.incidents.append((time.monotonic(), m)), REPORT_QOS
        )
        node.create_subscription(RobotSelection, f"{NS}/ember/robot_selection", self.selections.append, REPORT_QOS)
        self.diag = Diagnostics(node)
        assert spin_until(
            executor,
            lambda: self.raw.get_subscription_count() > 0
            and self.jpeg.get_subscription_count() > 0
            and node.count_publishers(f"{NS}/ember/incident") > 0
            and node.count_publishers(f"{NS}/ember/robot_selection") > 0,
            timeout=30,
        ), "incident node endpoints not matched"

    def stats(self) -> dict[str, str]:
        return self.diag.fresh(self.executor, DIAG)

    def analysis_for(self, sec: int, timeout: float = 20.0) -> IncidentAnalysis | None:
        def find():
            return next((m for _, m in self.incidents if m.header.stamp.sec == sec), None)

        spin_until(self.executor, lambda: find() is not None, timeout)
        return find()


def test_camera_frames_become_stamped_reports_equal_to_the_engine(robot, engine, shared_data):
    rgb = photo(shared_data)
    expected = engine.analyze(rgb, task=None, max_new_tokens=50)
    with ros_node("camera_client") as (node, executor):
        c = Client(node, executor)
        # raw frames (retried: best-effort QoS may lose one) then a JPEG frame of another photo
        for attempt in range(1, 6):
            c.raw.publish(numpy_to_image(rgb, "rgb8", header=header(1000 + attempt, 7)))
            got = c.analysis_for(1000 + attempt, timeout=5)
            if got is not None:
                break
        assert got is not None, f"no IncidentAnalysis for the raw frame:\n{robot.output()}"
        assert got.header.frame_id == "cam_bot/camera" and got.header.stamp.nanosec == 7
        assert got.robot_id == "cam_bot" and got.model_version == engine.model_version
        assert got.incident_type == expected.incident_type and list(got.labels) == expected.incident_labels
        assert np.allclose(got.scores, expected.incident_scores, atol=1e-5)
        assert got.place == expected.place and got.description == expected.text
        assert got.latency_ms > 0
        assert spin_until(executor, lambda: any(s.header.stamp == got.header.stamp for s in c.selections), 5)
        sel = next(s for s in c.selections if s.header.stamp == got.header.stamp)
        assert np.allclose(sel.scores, expected.robot_scores, atol=1e-5)
        assert list(sel.robot_types) == expected.robot_types and set(sel.robot_types) <= set(ROBOT_TYPES)

        flood = photo(shared_data, "example_flood.jpg")
        for attempt in range(1, 6):
            c.jpeg.publish(rgb_to_compressed(flood, "jpeg", header=header(2000 + attempt)))
            got = c.analysis_for(2000 + attempt, timeout=5)
            if got is not None:
                break
        assert got is not None, "no IncidentAnalysis for the JPEG frame"
        assert got.incident_type in INCIDENT_LABELS


def test_analyze_image_service_uses_the_real_model(robot, engine, shared_data):
    rgb = photo(shared_data, "car_accident_on_bridge.jpg")
    expected = engine.analyze(rgb, task="Find the drivers", max_new_tokens=50)
    with ros_node("analyze_client") as (node, executor):
        client = node.create_client(AnalyzeImage, f"{NS}/ember/analyze_image")
        assert spin_until(executor, client.service_is_ready, 30)
        req = AnalyzeImage.Request(image=numpy_to_image(rgb, "rgb8", header=header(77, 5, "cam")), task="Find the drivers")
        future = client.call_async(req)
        assert spin_until(executor, future.done, 30)
        res = future.result()
        assert res.success, res.message
        assert (res.analysis.header.stamp.sec, res.analysis.header.stamp.nanosec, res.analysis.header.frame_id) == (77, 5, "cam")
        assert res.analysis.incident_type == expected.incident_type
        assert res.selection.task == "Find the drivers"
        assert np.allclose(res.selection.scores, expected.robot_scores, atol=1e-5)
        bad = numpy_to_image(rgb, "rgb8")
        bad.step = 3  # smaller than a row
        future = client.call_async(AnalyzeImage.Request(image=bad))
        assert spin_until(executor, future.done, 30)
        assert not future.result().success and "bad_step" in future.result().message


def _malformed(kind: str, rgb: np.ndarray, sec: int):
    if kind == "corrupt_compressed":
        msg = rgb_to_compressed(rgb, "jpeg", header=header(sec))
        msg.data = bytes(msg.data)[:40] + b"\x00" * 100
        return msg
    if kind == "empty_compressed":
        msg = rgb_to_compressed(rgb, "jpeg", header=header(sec))
        msg.data = b""
        return msg
    msg = numpy_to_image(rgb, "rgb8", header=header(sec))
    if kind == "unknown_encoding":
        msg.encoding = "yuv422_weird"
    elif kind == "bad_step":
        msg.step = msg.width  # rgb8 needs 3 * width
    elif kind == "bad_data_length":
        msg.data = bytes(msg.data)[: len(msg.data) // 2]
    elif kind == "zero_size":
        msg.width, msg.height, msg.step, msg.data = 0, 0, 0, b""
    return msg


KINDS = ["unknown_encoding", "bad_step", "bad_data_length", "zero_size", "corrupt_compressed", "empty_compressed"]


def test_malformed_images_are_counted_logged_once_per_kind_and_the_node_keeps_going(robot, shared_data):
    rgb = photo(shared_data, size=(64, 48))
    with ros_node("malformed_client") as (node, executor):
        c = Client(node, executor)
        before = c.stats()
        sec = 3000
        for kind in KINDS:
            # three of each kind, one at a time (each is counted before the next is sent)
            for _ in range(3):
                start = int(c.diag.latest[DIAG].get(f"malformed_{kind}", "0"))
                ok = False
                for _attempt in range(5):
                    sec += 1
                    msg = _malformed(kind, rgb, sec)
                    (c.jpeg if isinstance(msg, CompressedImage) else c.raw).publish(msg)
                    if spin_until(executor, lambda k=kind, s=start: int(c.diag.latest[DIAG].get(f"malformed_{k}", "0")) > s, 3):
                        ok = True
                        break
                assert ok, f"{kind} not counted:\n{robot.output()}"
        stats = c.stats()
        for kind in KINDS:
            assert int(stats[f"malformed_{kind}"]) >= 3, (kind, stats)
        assert int(stats["frames_malformed"]) - int(before["frames_malformed"]) >= 3 * len(KINDS)
        # still alive and analysing
        for attempt in range(5):
            c.raw.publish(numpy_to_image(rgb, "rgb8", header=header(5000 + attempt)))
            if c.analysis_for(5000 + attempt, timeout=5) is not None:
                break
        else:
            pytest.fail(f"node stopped analysing after malformed images:\n{robot.output()}")
    out = robot.output()
    for kind in KINDS:
        assert out.count(f"malformed image ({kind})") == 1, (kind, out)
    assert robot.proc.poll() is None


def test_30hz_camera_into_a_slow_model_processes_the_newest_frame_and_counts_drops(robot, shared_data):
    delay, rate, duration = 0.3, 30.0, 4.0
    frames = [numpy_to_image(photo(shared_data, n, (160, 120)), "rgb8") for n in ("example_fire.jpg", "example_ship.jpg")]
    with ros_node("fast_camera") as (node, executor):
        c = Client(node, executor)
        set_parameter(node, executor, f"{NS}/incident_node", "processing_delay_s", delay)
        try:
            spin_until(executor, lambda: False, 0.5)  # let a frame in flight finish
            before = c.stats()
            sent: dict[int, float] = {}
            c.incidents.clear()
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < duration:
                target = t0 + i / rate
                while time.monotonic() < target:
                    executor.spin_once(timeout_sec=max(0.0, target - time.monotonic()))
                msg = frames[i % 2]
                msg.header = header(10_000 + i)
                sent[10_000 + i] = time.monotonic()
                c.raw.publish(msg)
                i += 1
            # the last analyses finish; then nothing more comes
            spin_until(executor, lambda: False, 3 * delay + 1.0)
            after = c.stats()
        finally:
            set_parameter(node, executor, f"{NS}/incident_node", "processing_delay_s", 0.0)
    got = [(t, m) for t, m in c.incidents if m.header.stamp.sec in sent]
    n_sent = len(sent)
    processed = int(after["frames_processed"]) - int(before["frames_processed"])
    received = int(after["frames_received"]) - int(before["frames_received"])
    dropped = int(after["frames_dropped"]) - int(before["frames_dropped"])
    # only about duration / delay analyses are possible; the rest were dropped, not queued
    assert 3 <= processed <= duration / delay + 3, (processed, n_sent)
    assert len(got) == processed
    assert received >= 0.5 * n_sent, (received, n_sent)  # best-effort QoS may lose a few on the way
    assert received == processed + dropped + int(after["frames_pending"]), after  # every frame accounted for
    assert dropped >= 0.5 * received, (received, processed, dropped)
    # newest frame: each analysed frame was at most a few camera periods old when the result came
    # a queue would make ages grow by ~0.27 s per analysis, past 3 s by the end
    ages = [t - sent[m.header.stamp.sec] for t, m in got]
    assert max(ages) < delay + 1.5, ages
    third = max(1, len(ages) // 3)
    assert statistics.fmean(ages[-third:]) < statistics.fmean(ages[:third]) + 0.5, ages
    assert statistics.median(m.latency_ms for _, m in got) < (delay + 0.6) * 1000
    indices = [m.header.stamp.sec for _, m in got]
    assert indices == sorted(indices)
    gaps = np.diff(indices)
    assert gaps.mean() >= 0.5 * delay * rate, indices  # skipped to the newest, ~9 frames apart


def test_a_frame_without_a_stamp_is_stamped_on_arrival_and_fused_by_the_manager(robot, shared_data, tmp_path):
    """Many camera drivers leave header.stamp zero: the node stamps such a frame when it arrives
    (both reports alike), so the manager can join the analysis with its selection."""
    rgb = photo(shared_data, size=(64, 48))
    params = {"heartbeat_timeout_s": 3.0, "diagnostics_period_s": 0.3, "task_wait_s": 3.0}
    with fleet_manager_process(tmp_path, params) as manager, ros_node("zero_stamp_camera") as (node, executor):
        c = Client(node, executor)
        mdiag = "ember/fleet_manager"
        assert spin_until(executor, lambda: c.diag.get(mdiag, "robots_online") == 1, 30), manager.output()
        got = None
        for _attempt in range(5):
            n = len(c.incidents)
            c.raw.publish(numpy_to_image(rgb, "rgb8", header=header(0, 0)))
            if spin_until(executor, lambda n=n: len(c.incidents) > n, 5):
                got = c.incidents[-1][1]
                break
        assert got is not None, f"no IncidentAnalysis for the unstamped frame:\n{robot.output()}"
        assert (got.header.stamp.sec, got.header.stamp.nanosec) != (0, 0)
        assert got.header.frame_id == "cam_bot/camera"
        assert spin_until(executor, lambda: any(s.header.stamp == got.header.stamp for s in c.selections), 5)
        assert spin_until(executor, lambda: c.diag.get(mdiag, "reports") >= 1, 10), manager.output()
        client = node.create_client(SubmitTask, "/fleet/submit_task")
        assert spin_until(executor, client.service_is_ready, 20)
        future = client.call_async(SubmitTask.Request(task="Help at the scene"))
        assert spin_until(executor, future.done, 30)
        res = future.result()
        assert res.incident_id and "no robot selection" not in res.message, (res.message, manager.output())


def test_one_frame_on_both_raw_and_compressed_topics_is_analysed_once(robot, shared_data):
    """image_transport publishes every frame on image_raw and image_raw/compressed when both have
    subscribers (the node subscribes to both): the second copy (same stamp and frame_id) is the
    same picture, so it is skipped and counted, not analysed and reported a second time."""
    rgb = photo(shared_data, size=(64, 48))
    with ros_node("dual_transport_camera") as (node, executor):
        c = Client(node, executor)
        before = c.stats()
        seen = None
        for attempt in range(1, 6):
            sec = 6000 + attempt
            c.raw.publish(numpy_to_image(rgb, "rgb8", header=header(sec, 3)))
            spin_until(executor, lambda: False, 0.15)  # the worker takes the raw copy (not replaced in the slot)
            c.jpeg.publish(rgb_to_compressed(rgb, "jpeg", header=header(sec, 3)))
            if c.analysis_for(sec, timeout=5) is not None:
                seen = sec
                break
        assert seen is not None, f"no IncidentAnalysis for the frame:\n{robot.output()}"
        spin_until(executor, lambda: False, 2.0)  # a second report would come within this
        reports = [m for _, m in c.incidents if m.header.stamp.sec == seen]
        assert len(reports) == 1, [m.header.stamp for m in reports]
        after = c.stats()
        assert int(after["frames_duplicate"]) > int(before.get("frames_duplicate", "0")), after


def test_each_unsupported_encoding_is_named_in_the_log_not_only_the_first(robot, shared_data):
    """A robot that has once logged an odd encoding must still name a different one later (a new
    camera plugged in), or the operator sees only a counter and never learns what it sends."""
    rgb = photo(shared_data, size=(16, 12))
    with ros_node("odd_encodings_camera") as (node, executor):
        c = Client(node, executor)
        for sec, encoding in ((7001, "nv21"), (7101, "64FC1")):
            ok = False
            for attempt in range(5):
                msg = numpy_to_image(rgb, "rgb8", header=header(sec + attempt))
                msg.encoding = encoding
                c.raw.publish(msg)
                if spin_until(executor, lambda e=encoding: f"encoding '{e}'" in robot.output(), 3):
                    ok = True
                    break
            assert ok, f"{encoding} was never named in the log:\n{robot.output()}"
        for _ in range(2):  # repeats of a named encoding are only counted
            msg = numpy_to_image(rgb, "rgb8", header=header(7200 + _))
            msg.encoding = "nv21"
            c.raw.publish(msg)
        spin_until(executor, lambda: False, 1.0)
    assert robot.output().count("unknown image encoding 'nv21'") == 1, robot.output()


def test_a_frame_refused_on_the_raw_topic_is_still_analysed_from_its_compressed_copy(robot, shared_data):
    """A driver whose raw frames use an encoding the node refuses (8UC3) still gets analysed from the
    JPEG copy of the same frame: only a copy of an *analysed* frame counts as duplicate."""
    rgb = photo(shared_data, size=(64, 48))
    with ros_node("refused_raw_camera") as (node, executor):
        c = Client(node, executor)
        got = None
        for attempt in range(1, 6):
            sec = 8000 + attempt
            raw = numpy_to_image(rgb[:, :, ::-1], "bgr8", header=header(sec, 9))
            raw.encoding = "8UC3"  # cv_bridge's passthrough of an OpenCV frame
            c.raw.publish(raw)
            spin_until(executor, lambda: False, 0.3)  # the raw copy is taken (and refused) first
            c.jpeg.publish(rgb_to_compressed(rgb, "jpeg", header=header(sec, 9)))
            got = c.analysis_for(sec, timeout=5)
            if got is not None:
                break
        assert got is not None, f"the JPEG copy of a refused raw frame was not analysed:\n{robot.output()}"
