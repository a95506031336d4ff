"""The incident node with the drivers and command lines a ROS user already has: a battery driver
publishing BatteryState best-effort (sensor-data QoS, as many do), and the camera topic moved by a
remap (`-r camera/image_raw:=/front/image_color`), where the compressed transport must follow the
raw topic as image_transport's `<base>/compressed` does."""

from __future__ import annotations

import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import BatteryState

from tests.ros.helpers import ros_node, spin_until
from tests.ros.node_helpers import Heartbeats, node_process

pytestmark = pytest.mark.ros
NS = "/drv_bot"


@pytest.fixture(scope="module")
def robot(tiny_bundle, tmp_path_factory):
    params = {"robot_id": "drv_bot", "robot_type": "legged", "bundle": str(tiny_bundle), "battery_topic": "battery_state", "heartbeat_period_s": 0.2}
    remap = ("-r", "camera/image_raw:=/front/image_color")
    with node_process("ember.ros.incident_node", f"{NS}/incident_node", params, tmp_path_factory.mktemp("drv"), remap) as proc:
        yield proc


def test_a_best_effort_battery_driver_is_heard(robot):
    with ros_node("battery_driver") as (node, executor):
        pub = node.create_publisher(BatteryState, f"{NS}/battery_state", qos_profile_sensor_data)
        beats = Heartbeats(node)

        def heard() -> bool:
            pub.publish(BatteryState(percentage=0.42))
            return any(abs(b.battery - 0.42) < 1e-6 for b in beats.of("drv_bot"))

        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 20), (
            f"the node's battery subscription does not match a best-effort publisher:\n{robot.output()}"
        )
        assert spin_until(executor, heard, 15), robot.output()


def test_the_compressed_topic_follows_a_remapped_camera_topic(robot):
    with ros_node("remap_probe") as (node, executor):
        assert spin_until(
            executor,
            lambda: node.count_subscribers("/front/image_color") > 0 and node.count_subscribers("/front/image_color/compressed") > 0,
            20,
        ), (node.get_topic_names_and_types(), robot.output())
        assert "/front/image_color/compressed" in robot.output()
