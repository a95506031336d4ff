"""`ember-bag replay` and `record` over real DDS: timing, rate, remap, loop, both storages."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ember_msgs.msg import RobotSelection
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ember.bag.io import create_writer, open_bag, reliable_qos
from ember.bag.types import definition_for, typestore_with
from ember.ros.conversions import numpy_to_image
from tests.bag.helpers import START_NS, custom_type_bag, string_bag
from tests.conftest import ROOT
from tests.ros.helpers import child_process, ros_node, spin_until

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]
QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# recorded intervals 0.2 .. 0.5 s, uneven on purpose
OFFSETS = [0.0, 0.3, 0.5, 1.0, 1.2, 1.6, 1.8]


def _replay(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ember.bag.cli", "replay", *map(str, args), "--wait-subscribers", "30"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, node, executor, topic: str, timeout: float = 30) -> str:
    """Stop a replay whose messages all arrived (SIGINT skips its wait for acknowledgements), then
    wait until its publisher left the graph: tearing our node down while Fast DDS removes the
    peer's endpoints can deadlock Fast DDS 3.2 (PDP lock vs. timer thread)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    spin_until(executor, lambda: node.count_publishers(topic) == 0, timeout=15)
    return out


@pytest.mark.parametrize(("storage", "rate"), [("mcap", 1.0), ("sqlite3", 2.0)])
def test_replay_keeps_recorded_intervals_within_ten_percent(tmp_path, storage, rate):
    texts = string_bag(tmp_path / "bag", storage, OFFSETS)
    got: list[tuple[float, str]] = []
    with ros_node("timing_probe") as (node, executor):
        node.create_subscription(String, "/timed", lambda m: got.append((time.monotonic(), m.data)), QOS)
        proc = _replay(tmp_path / "bag", "--rate", rate, "--remap", "/chatter:=/timed")
        try:
            assert spin_until(executor, lambda: len(got) == len(texts), timeout=45), got
        finally:
            out = _finish(proc, node, executor, "/timed")
    assert [t for _, t in got] == texts
    received = np.diff([t for t, _ in got])
    recorded = np.diff(OFFSETS) / rate
    rel_err = np.abs(received - recorded) / recorded
    assert rel_err.max() < 0.10, f"intervals {received.round(4)} vs recorded {recorded}"
    assert f"published {len(texts)} messages on 1 topics (1 pass)" in out


def _mixed_bag(path, storage: str) -> tuple[RobotSelection, Image]:
    """A bag with an ember_msgs type and a sensor image, serialised by rclpy itself."""
    sel = RobotSelection(robot_id="drone_1", task="Find survivors", robot_types=["drone", "legged"],
                         scores=[0.875, 0.125, 0.25, 0.75, 0.0], confidence=0.5, reasoning="rubble")
    sel.header.stamp.sec, sel.header.frame_id = 42, "cam"
    img = numpy_to_image(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3), "rgb8", header=sel.header)
    store = typestore_with(["ember_msgs/msg/RobotSelection", "sensor_msgs/msg/Image"])
    writer = create_writer(path, storage)
    for topic, msg, msgtype in (("/sel", sel, "ember_msgs/msg/RobotSelection"), ("/img", img, "sensor_msgs/msg/Image")):
        msgdef, digest = definition_for(store, msgtype)
        conn = writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest, offered_qos_profiles=[reliable_qos()])
        writer.write(conn, START_NS, serialize_message(msg))
    writer.close()
    return sel, img


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_replay_publishes_any_installed_type_with_remapping(tmp_path, storage):
    sel, img = _mixed_bag(tmp_path / "bag", storage)
    with open_bag(tmp_path / "bag") as bag:  # the generated definitions hash like the installed interfaces
        assert not bag.unknown_types
    got: dict[str, object] = {}
    with ros_node("types_probe") as (node, executor):
        node.create_subscription(RobotSelection, "/robot_a/sel", lambda m: got.setdefault("sel", m), QOS)
        node.create_subscription(Image, "/robot_a/camera/image_raw", lambda m: got.setdefault("img", m), QOS)
        proc = _replay(tmp_path / "bag", "--remap", "/sel:=/robot_a/sel", "/img:=/robot_a/camera/image_raw")
        try:
            assert spin_until(executor, lambda: len(got) == 2, timeout=45), got
        finally:
            _finish(proc, node, executor, "/robot_a/sel")
    # field for field (floats are binary fractions, exact in float32); CDR padding bytes are not compared
    assert got["sel"] == sel and got["img"] == img
    assert list(got["sel"].robot_types) == ["drone", "legged"] and bytes(got["img"].data) == bytes(range(72))


def test_replay_loops_until_interrupted_and_skips_unknown_types_on_request(tmp_path):
    custom_type_bag(tmp_path / "bag", "mcap")  # /chatter m0 m1 m2 every 0.1 s, plus /widgets of an unknown type
    got: list[str] = []
    with ros_node("loop_probe") as (node, executor):
        node.create_subscription(String, "/chatter", lambda m: got.append(m.data), QOS)
        proc = _replay(tmp_path / "bag", "--loop", "--skip-unknown")
        try:
            assert spin_until(executor, lambda: len(got) >= 8, timeout=45), got
        finally:
            out = _finish(proc, node, executor, "/chatter")
    assert got[:8] == ["m0", "m1", "m2"] * 2 + ["m0", "m1"]
    assert "skipping /widgets" in out and "passes" in out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_then_replay_round_trips_messages(tmp_path, storage):
    bag = tmp_path / "rec"
    texts = [f"hello {k}" for k in range(20)]
    statuses = []
    with ros_node("record_source") as (node, executor):
        from ember_msgs.msg import RobotStatus

        pub_s = node.create_publisher(String, "/rec/chatter", QOS)
        pub_r = node.create_publisher(RobotStatus, "/rec/status", QOS)
        with child_process(["-m", "ember.bag.cli", "record", "--topics", "/rec/chatter", "/rec/status", "--out", str(bag),
                            "--storage", storage]) as proc:
            assert spin_until(executor, lambda: pub_s.get_subscription_count() > 0 and pub_r.get_subscription_count() > 0,
                              timeout=30), "recorder did not subscribe"
            for k, text in enumerate(texts):
                pub_s.publish(String(data=text))
                status = RobotStatus(robot_id=f"r{k}", robot_type="drone", available=True, battery=(k % 16) / 16)
                statuses.append(status)
                pub_r.publish(status)
            assert pub_s.wait_for_all_acked(Duration(seconds=10)) and pub_r.wait_for_all_acked(Duration(seconds=10))
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
            assert proc.returncode == 0, out
            # let the recorder's endpoints leave the graph before our node goes (see _finish)
            spin_until(executor, lambda: pub_s.get_subscription_count() == 0 and pub_r.get_subscription_count() == 0,
                       timeout=15)
    assert "/rec/chatter 20, /rec/status 20" in out
    with open_bag(bag) as opened:
        topics = {c.topic: c for c in opened.connections}
        assert topics["/rec/status"].msgtype == "ember_msgs/msg/RobotStatus" and topics["/rec/status"].msgcount == 20
        assert not opened.unknown_types
        recorded = [opened.deserialize(raw, c.msgtype).data for c, _, raw in opened.messages([topics["/rec/chatter"]])]
    assert recorded == texts

    got: list = []
    with ros_node("replay_probe") as (node, executor):
        node.create_subscription(RobotStatus, "/again/status", got.append, QOS)
        proc = _replay(bag, "--topics", "/rec/status", "--remap", "/rec/status:=/again/status")
        try:
            assert spin_until(executor, lambda: len(got) == 20, timeout=45)
        finally:
            _finish(proc, node, executor, "/again/status")
    assert got == statuses
    assert [m.robot_id for m in got] == [f"r{k}" for k in range(20)]
