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
from ember.bag.ground_truth import GROUND_TRUTH_TOPIC, GroundTruth, canonical_labels
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


@dataclass(frozen=True)
class CameraStream:
    """The camera topic to evaluate: its message type and every connection that carries it
    (a bag written by several recorders, or merged, can hold one topic on several)."""

    topic: str
    msgtype: str
    connections: list[Connection]

    @property
    def msgcount(self) -> int:
        return sum(c.msgcount for c in self.connections)


def camera_stream(bag: OpenBag, topic: str | None = None) -> CameraStream:
    """The camera topic to evaluate: `topic`, or the bag's only Image/CompressedImage topic."""
    if topic is not None:
        match = [c for c in bag.connections if c.topic == topic]
        if not match:
            have = ", ".join(sorted({c.topic for c in bag.connections})) or "none"
            raise BagError(f"bag {bag.path} has no topic {topic!r} (topics: {have})")
        if match[0].msgtype not in IMAGE_TYPES:
            raise BagError(f"topic {topic} in {bag.path} is {match[0].msgtype}, not a camera image type")
    else:
        match = [c for c in bag.connections if c.msgtype in IMAGE_TYPES]
        if not match:
            have = ", ".join(f"{c.topic} ({c.msgtype})" for c in bag.connections) or "none"
            raise BagError(f"bag {bag.path} has no camera topic (sensor_msgs Image or CompressedImage); topics: {have}")
        if len({c.topic for c in match}) > 1:
            raise BagError(
                f"bag {bag.path} has several camera topics ({', '.join(sorted({c.topic for c in match}))}); choose one"
            )
    types = sorted({c.msgtype for c in match})
    if len(types) > 1:
        raise BagError(
            f"topic {match[0].topic} in {bag.path} carries messages of several types ({', '.join(types)}; a merged "
            "bag?): an evaluation reads one camera stream of one type, so split the topic first"
        )
    return CameraStream(match[0].topic, types[0], match)


def read_ground_truth(bag: OpenBag, image_topic: str | None = None) -> dict[int, GroundTruth]:
    """Ground truth by image stamp (ns); {} when the bag has no /ember/ground_truth topic.

    With `image_topic`, truth that names another camera is left out when some truth names
    this one (several cameras may share stamps; truth naming none, or a bag whose truth names
    only other topics, e.g. after a remap, applies as it is). Two different truths for one
    stamp of the chosen camera raise BagError.
    """
    conns = bag.connections_on(GROUND_TRUTH_TOPIC)
    if not conns:
        return {}
    truths = [_checked_truth(bag, bag.deserialize(raw, conn.msgtype).data) for conn, _t, raw in bag.messages(conns)]
    if image_topic is not None and any(t.image_topic == image_topic for t in truths):
        truths = [t for t in truths if t.image_topic in ("", image_topic)]
    out: dict[int, GroundTruth] = {}
    for truth in truths:
        seen = out.get(truth.stamp_ns)
        if seen is not None and seen != truth:
            raise BagError(
                f"bag {bag.path}: two different ground truths for the image stamped {_stamp_text(truth.stamp_ns)}"
                f"{_zero_note(truth.stamp_ns)} on {truth.image_topic or 'the camera'} (sources {seen.source!r} and "
                f"{truth.source!r}); ground truth is matched to frames by header stamp"
            )
        out[truth.stamp_ns] = truth
    return out


def _checked_truth(bag: OpenBag, text: str) -> GroundTruth:
    """A ground-truth message with its labels as ember.labels names them (matched as ember-train matches
    them: 'On_Fire' is 'on fire'; the metrics index them as they are); BagError naming the bag and frame
    for an unknown one."""
    try:
        truth = GroundTruth.from_json(text)
    except BagError as exc:
        raise BagError(f"bag {bag.path}: {exc}") from None
    try:
        truth.incidents = canonical_labels(truth.incidents, "incident")
        truth.negatives = canonical_labels(truth.negatives, "incident")
        truth.places = canonical_labels(truth.places, "place")
    except ValueError as exc:
        raise BagError(f"bag {bag.path}: the ground truth of frame {truth.source or '?'} (stamp "
                       f"{_stamp_text(truth.stamp_ns)}) has {exc}") from None
    return truth


def _stamp_text(stamp_ns: int) -> str:
    return f"{stamp_ns // 10**9}.{stamp_ns % 10**9:09d}"


def _zero_note(stamp_ns: int) -> str:
    return " (the camera left the stamp zero)" if stamp_ns == 0 else ""


def decode(msg: object, msgtype: str) -> np.ndarray:
    """RGB uint8 pixels of a deserialised Image/CompressedImage (ValueError if malformed)."""
    return compressed_to_rgb(msg) if msgtype.endswith("CompressedImage") else image_msg_to_rgb(msg)


def iter_frames(bag: OpenBag, camera: CameraStream, truth: dict[int, GroundTruth]) -> Iterator[Frame]:
    """Frames of the camera topic (all its connections) in bag order.

    Raises BagError when two frames carry one header stamp (a camera that leaves stamps
    zero, say): answers and ground truth are matched to frames by stamp.
    """
    first_index: dict[int, int] = {}
    for index, (_c, t, raw) in enumerate(bag.messages(camera.connections)):
        msg = bag.deserialize(raw, camera.msgtype)
        stamp = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
        if stamp in first_index:
            raise BagError(
                f"bag {bag.path}: frames {first_index[stamp]} and {index} of {camera.topic} share the header stamp "
                f"{_stamp_text(stamp)}{_zero_note(stamp)}; evaluation matches "
                "answers and ground truth to frames by header stamp, so every frame needs its own"
            )
        first_index[stamp] = index
        try:
            rgb, error = decode(msg, camera.msgtype), None
        except ValueError as exc:
            rgb, error = None, str(exc)
        yield Frame(index, stamp, t, camera.topic, rgb, error, truth.get(stamp))
