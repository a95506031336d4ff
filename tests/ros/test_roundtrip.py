"""Every ember_msgs type and the AnalyzeImage service across two processes over real DDS."""

from __future__ import annotations

import numpy as np
import pytest
from ember_msgs.srv import AnalyzeImage
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from ember.ros.conversions import numpy_to_image
from tests.ros.helpers import child_process, ros_node, spin_until
from tests.ros.message_samples import sample_messages, to_plain

pytestmark = pytest.mark.ros
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def echo_peer():
    with child_process(["-m", "tests.ros.echo_peer"]) as proc:
        yield proc


def test_every_message_type_round_trips_between_processes(echo_peer):
    samples = sample_messages()
    received: dict[str, object] = {}
    with ros_node("roundtrip_client") as (node, executor):
        pubs = {}
        for name, msg in samples.items():
            pubs[name] = node.create_publisher(type(msg), f"/roundtrip/in/{name}", QOS)
            node.create_subscription(
                type(msg), f"/roundtrip/out/{name}", lambda m, n=name: received.setdefault(n, m), QOS
            )
        matched = spin_until(
            executor,
            lambda: all(p.get_subscription_count() > 0 for p in pubs.values())
            and all(node.count_publishers(f"/roundtrip/out/{n}") > 0 for n in samples),
            timeout=20,
        )
        assert matched, "echo peer endpoints were not discovered"
        for name, msg in samples.items():
            pubs[name].publish(msg)
        assert spin_until(executor, lambda: len(received) == len(samples), timeout=15), sorted(received)

    for name, sent in samples.items():
        got = received[name]
        assert to_plain(got) == to_plain(sent), name
        assert got == sent, name
    plan = received["ActionPlan"]
    assert [s.robot_id for s in plan.steps] == ["drone_1", "dog_2", "hum_1"]
    assert (plan.header.stamp.sec, plan.header.stamp.nanosec) == (7, 8)
    assert list(received["RobotSelection"].scores) == [0.5, 0.125, 0.875, 0.25, 0.0625]


def test_analyze_image_service_across_processes(echo_peer):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    header = Header(frame_id="cam", stamp=Header().stamp)
    header.stamp.sec, header.stamp.nanosec = 11, 12
    request = AnalyzeImage.Request(image=numpy_to_image(rgb, "rgb8", header=header), task="Find survivors")
    with ros_node("analyze_client") as (node, executor):
        client = node.create_client(AnalyzeImage, "/roundtrip/analyze_image")
        assert spin_until(executor, client.service_is_ready, timeout=20), "service not discovered"
        future = client.call_async(request)
        assert spin_until(executor, future.done, timeout=15)
        response = future.result()
    assert response.success
    assert response.message == "5x6 rgb8 90 bytes"
    assert response.analysis.header.frame_id == "cam"
    assert (response.analysis.header.stamp.sec, response.analysis.header.stamp.nanosec) == (11, 12)
    assert response.analysis.description == "Find survivors"
    assert list(response.selection.robot_types) == ["drone"]
    assert list(response.selection.scores) == [1.0, 0.0, 0.0, 0.0, 0.5]
