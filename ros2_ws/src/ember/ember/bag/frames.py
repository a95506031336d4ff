"""Camera frames and their ground truth out of a bag, decoded the way the robots decode them.

Images are decoded with `ember.ros.conversions` (the functions the incident node uses), so
an offline evaluation sees exactly the pixels a live node sees. Ground truth is matched to
a frame by the image header stamp it carries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from rosbags.interfaces import Connection

from ember.bag.errors import BagError
from ember.bag.ground_truth import GROUND_TRUTH_TOPIC, GroundTruth
from ember.bag.io import OpenBag
from ember.ros.conversions import compressed_to_rgb, image_msg_to_rgb

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class Frame:
    """One camera message: header stamp, bag time, pixels (None if undecodable) and truth."""

    index: int
    stamp_ns: int
    bag_time_ns: int
    topic: str
    rgb: np.ndarray | None
    error: str | None
    truth: GroundTruth | None


def camera_connection(bag: OpenBag, topic: str | None = None) -> Connection:
    """The camera topic to evaluate: `topic`, or the bag's only Image/CompressedImage topic."""
    cams = [c for c in bag.connections if c.msgtype in IMAGE_TYPES]
    if topic is not None:
        match = [c for c in bag.connections if c.topic == topic]
        if not match:
            have = ", ".join(sorted({c.topic for c in bag.connections})) or "none"
            raise BagError(f"bag {bag.path} has no topic {topic!r} (topics: {have})")
        if match[0].msgtype not in IMAGE_TYPES:
            raise BagError(f"topic {topic} in {bag.path} is {match[0].msgtype}, not a camera image type")
        return match[0]
    if not cams:
        have = ", ".join(f"{c.topic} ({c.msgtype})" for c in bag.connections) or "none"
        raise BagError(f"bag {bag.path} has no camera topic (sensor_msgs Image or CompressedImage); topics: {have}")
    if len({c.topic for c in cams}) > 1:
        raise BagError(f"bag {bag.path} has several camera topics ({', '.join(sorted({c.topic for c in cams}))}); choose one")
    return cams[0]


def read_ground_truth(bag: OpenBag) -> dict[int, GroundTruth]:
    """Ground truth by image stamp (ns); {} when the bag has no /ember/ground_truth topic."""
    conns = bag.connections_on(GROUND_TRUTH_TOPIC)
    if not conns:
        return {}
    out: dict[int, GroundTruth] = {}
    for conn, _t, raw in bag.messages(conns):
        truth = GroundTruth.from_json(bag.deserialize(raw, conn.msgtype).data)
        out[truth.stamp_ns] = truth
    return out


def decode(msg: object, msgtype: str) -> np.ndarray:
    """RGB uint8 pixels of a deserialised Image/CompressedImage (ValueError if malformed)."""
    return compressed_to_rgb(msg) if msgtype.endswith("CompressedImage") else image_msg_to_rgb(msg)


def iter_frames(bag: OpenBag, conn: Connection, truth: dict[int, GroundTruth]) -> Iterator[Frame]:
    """Frames of one camera connection in bag order."""
    for index, (_c, t, raw) in enumerate(bag.messages([conn])):
        msg = bag.deserialize(raw, conn.msgtype)
        stamp = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
        try:
            rgb, error = decode(msg, conn.msgtype), None
        except ValueError as exc:
            rgb, error = None, str(exc)
        yield Frame(index, stamp, t, conn.topic, rgb, error, truth.get(stamp))
