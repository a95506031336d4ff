"""`ember-bag record`: record topics into a rosbag2 (mcap or sqlite3) on the embedded default.

Like `ros2 bag record`: each topic is subscribed as soon as a publisher appears (its type
read from the graph), with raw (serialised) delivery, a QoS compatible with every
publisher's, and stored with the receive time. Definitions come from the rosbags Kilted
store or the installed interface's .msg files, so the bag is readable anywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from ember.bag.errors import BagError
from ember.bag.io import create_writer
from ember.bag.types import definition_for, rclpy_class, typestore_with

_ZERO = QosTime(0, 0)


def _to_bag_qos(profile) -> Qos:
    """An rclpy QoSProfile as rosbags records it in metadata."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    return Qos(
        QosHistory.KEEP_LAST,
        int(profile.depth),
        QosReliability.BEST_EFFORT if profile.reliability == ReliabilityPolicy.BEST_EFFORT else QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL else QosDurability.VOLATILE,
        _ZERO,
        _ZERO,
        QosLiveliness.AUTOMATIC,
        _ZERO,
        False,
    )


def _subscription_qos(offered: list):
    """Reliable only if every publisher is; transient-local only if every publisher is."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
    transient = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


class Recorder:
    """Records `topics` through `node` into a new bag at `out` until `close()`."""

    def __init__(self, node, out: str | Path, topics: Sequence[str], storage: str = "mcap") -> None:
        if not topics:
            raise BagError("give at least one topic to record")
        bad = [t for t in topics if not t.startswith("/")]
        if bad:
            raise BagError(f"record needs absolute topic names, got {', '.join(bad)}")
        self.node = node
        self.path = Path(out)
        self.topics = list(dict.fromkeys(topics))
        self.writer = create_writer(self.path, storage)
        self.counts: dict[str, int] = {t: 0 for t in self.topics}
        self._connections: dict[str, object] = {}
        self._subscriptions: dict[str, object] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.errors: list[str] = []
        self._failed: set[str] = set()
        self._timer = node.create_timer(0.1, self.discover)
        self.discover()

    def discover(self) -> None:
        """Subscribe every wanted topic that now has a publisher (called by a 10 Hz timer)."""
        if self._closed:
            return
        types = dict(self.node.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self._subscriptions or topic in self._failed or topic not in types:
                continue
            offered = [i.qos_profile for i in self.node.get_publishers_info_by_topic(topic)]
            if not offered:
                continue
            msgtype = types[topic][0]
            cls = rclpy_class(msgtype)
            if cls is None:
                self._error(topic, f"topic {topic}: {msgtype} has no installed Python interface; not recorded")
                continue
            try:
                store = typestore_with([msgtype])
                msgdef, digest = definition_for(store, msgtype)
            except BagError as exc:
                self._error(topic, f"topic {topic}: {exc}; not recorded")
                continue
            with self._lock:
                self._connections[topic] = self.writer.add_connection(
                    topic, msgtype, msgdef=msgdef, rihs01=digest, offered_qos_profiles=[_to_bag_qos(p) for p in offered]
                )
            self._subscriptions[topic] = self.node.create_subscription(
                cls, topic, lambda raw, t=topic: self._on_message(t, raw), _subscription_qos(offered), raw=True
            )

    def _error(self, topic: str, text: str) -> None:
        self._failed.add(topic)
        self.errors.append(text)
        self.node.get_logger().error(text)

    def _on_message(self, topic: str, raw: bytes) -> None:
        stamp = self.node.get_clock().now().nanoseconds
        with self._lock:
            if self._closed:
                return
            self.writer.write(self._connections[topic], stamp, raw)
            self.counts[topic] += 1

    @property
    def subscribed(self) -> list[str]:
        """Topics with a live subscription."""
        return [t for t in self.topics if t in self._subscriptions]

    def close(self) -> dict[str, int]:
        """Stop recording and write the bag's metadata; returns messages per topic."""
        with self._lock:
            if self._closed:
                return dict(self.counts)
            self._closed = True
            self.node.destroy_timer(self._timer)
            for sub in self._subscriptions.values():
                self.node.destroy_subscription(sub)
            self.writer.close()
        return dict(self.counts)
