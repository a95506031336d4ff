"""A separate process for round-trip tests: echoes every ember_msgs type and serves AnalyzeImage.

Run as `python -m tests.ros.echo_peer`; prints READY once its endpoints exist.
"""

from __future__ import annotations

from ember_msgs.srv import AnalyzeImage
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from ember.ros.spinning import run_node
from tests.ros.message_samples import message_types

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class EchoPeer(Node):
    """Republishes /roundtrip/in/<Type> on /roundtrip/out/<Type>; answers AnalyzeImage trivially."""

    def __init__(self) -> None:
        super().__init__("echo_peer")
        self._keep = []
        for name, msg_type in message_types().items():
            pub = self.create_publisher(msg_type, f"/roundtrip/out/{name}", QOS)
            self._keep.append(self.create_subscription(msg_type, f"/roundtrip/in/{name}", pub.publish, QOS))
            self._keep.append(pub)
        self.create_service(AnalyzeImage, "/roundtrip/analyze_image", self._analyze)

    def _analyze(self, request: AnalyzeImage.Request, response: AnalyzeImage.Response) -> AnalyzeImage.Response:
        image = request.image
        response.success = True
        response.message = f"{image.width}x{image.height} {image.encoding} {len(image.data)} bytes"
        response.analysis.header = image.header
        response.analysis.robot_id = "echo_peer"
        response.analysis.incident_type = "on fire"
        response.analysis.labels = ["on fire", "with smoke"]
        response.analysis.scores = [0.75, 0.25]
        response.analysis.description = request.task
        response.selection.header = image.header
        response.selection.task = request.task
        response.selection.robot_types = ["drone"]
        response.selection.scores = [1.0, 0.0, 0.0, 0.0, 0.5]
        return response


def main() -> None:
    run_node(EchoPeer, "echo_peer")

if __name__ == "__main__":
    main()
