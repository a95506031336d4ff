"""`ember-bag replay`: publish a bag's messages over rclpy at their recorded timing.

Messages are never deserialised: the recorded CDR bytes go to `Publisher.publish(bytes)`
(rclpy's raw publishing). A publisher needs the rclpy class of its type, found by name
(`sensor_msgs/msg/Image` -> `sensor_msgs.msg.Image`); the installed interface must hash
like the definition the bag recorded (RIHS01), or the bytes would be misread. Publishers
offer the QoS the bag recorded for each topic (reliability, durability, depth).

Timing: message k goes out at wall time start + (t_k - t_0) / rate, waited for with a
monotonic clock (sleep, then a short spin for the last millisecond).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.interfaces import Connection, QosDurability, QosReliability

from ember.bag.errors import BagError
from ember.bag.io import open_bag
from ember.bag.types import installed_hash, rclpy_class, split_type

_PREFETCH = 16
"""Messages read ahead of publishing."""


def parse_remaps(items: Sequence[str]) -> dict[str, str]:
    """`from:=to` strings -> {from: to}; BagError for anything else."""
    out: dict[str, str] = {}
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src.strip() or not dst.strip():
            raise BagError(f"bad remap {item!r}; expected FROM:=TO, e.g. /camera/image_raw:=/drone_1/camera/image_raw")
        out[src.strip()] = dst.strip()
    return out


def _qos_for(conn: Connection):
    """rclpy QoS that offers what the recording publisher offered (reliable, volatile, depth 10 if unknown)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    profiles = getattr(conn.ext, "offered_qos_profiles", None) or []
    reliable, transient, depth = True, False, 10
    if profiles:
        reliable = all(p.reliability != QosReliability.BEST_EFFORT for p in profiles)
        transient = all(p.durability == QosDurability.TRANSIENT_LOCAL for p in profiles)
        depth = max([10] + [int(p.depth) for p in profiles])
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


def _install_hint(msgtype: str) -> str:
    pkg = split_type(msgtype)[0]
    return f"pip install ros-{pkg.replace('_', '-')} (embedded default) or apt install ros-$ROS_DISTRO-{pkg.replace('_', '-')}"


@dataclass
class ReplayStats:
    """What one replay did; `lag_s` is actual minus planned publish time, per message."""

    published: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    loops: int = 0
    lag_s: list[float] = field(default_factory=list)
    skipped_topics: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lags = sorted(abs(x) for x in self.lag_s) or [0.0]
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
        return (
            f"published {self.published} messages on {len(self.per_topic)} topics"
            f" ({self.loops} pass{'es' if self.loops != 1 else ''}); timing lag p99 {p99 * 1e3:.2f} ms,"
            f" max {lags[-1] * 1e3:.2f} ms"
        )


class Replayer:
    """Publishes one bag through an rclpy node. Create, `wait_for_subscribers` if needed, `run`."""

    def __init__(
        self,
        node,
        bag: str | Path,
        rate: float = 1.0,
        loop: bool = False,
        remap: dict[str, str] | None = None,
        topics: Sequence[str] | None = None,
        skip_unknown: bool = False,
    ) -> None:
        if not rate > 0:  # NaN too: it would plan every publish at NaN and wait for ever
            raise BagError(f"--rate must be a positive speed factor, got {rate}")
        self.node, self.path, self.rate, self.loop = node, Path(bag), rate, loop
        self.remap = dict(remap or {})
        self.stats = ReplayStats()
        self._stop = threading.Event()
        with open_bag(self.path) as opened:
            conns = opened.connections
            self.start_ns = opened.reader.start_time if conns else 0
            self.message_count = opened.reader.message_count
            self._stream_len = max((c.msgcount for c in conns), default=0)
        if not conns:
            raise BagError(f"bag {self.path} has no topics")
        names = {c.topic for c in conns}
        if topics:
            missing = [t for t in topics if t not in names]
            if missing:
                raise BagError(f"bag {self.path} has no topic {', '.join(missing)} (topics: {', '.join(sorted(names))})")
            conns = [c for c in conns if c.topic in topics]
        unknown_remaps = [t for t in self.remap if t not in names]
        if unknown_remaps:
            raise BagError(f"--remap names topics the bag lacks: {', '.join(unknown_remaps)} (topics: {', '.join(sorted(names))})")
        self.publishers: dict[int, object] = {}
        self.out_topic: dict[int, str] = {}
        problems = []
        for conn in conns:
            problem = self._check(conn)
            if problem:
                problems.append(problem)
                self.stats.skipped_topics.append(conn.topic)
                continue
            out = self.remap.get(conn.topic, conn.topic)
            self.publishers[conn.id] = node.create_publisher(rclpy_class(conn.msgtype), out, _qos_for(conn))
            self.out_topic[conn.id] = out
        if problems and not skip_unknown:
            raise BagError("cannot replay " + "; ".join(problems) + " (--skip-unknown replays the other topics)")
        if not self.publishers:
            raise BagError(f"no topic of {self.path} can be replayed: " + "; ".join(problems))

    def _check(self, conn: Connection) -> str | None:
        """Why `conn` cannot be published, or None."""
        cls = rclpy_class(conn.msgtype)
        if cls is None:
            defined = bool(conn.msgdef.data.strip())
            what = "is defined in the bag but has" if defined else "is an unknown message type: the bag holds no definition and there is"
            return f"topic {conn.topic}: {conn.msgtype} {what} no installed Python interface ({_install_hint(conn.msgtype)})"
        have = installed_hash(conn.msgtype)
        if have and conn.digest and conn.digest.startswith("RIHS01_") and have != conn.digest:
            return (
                f"topic {conn.topic}: the installed {conn.msgtype} ({have}) differs from the one recorded "
                f"({conn.digest}); its bytes would be misread"
            )
        return None

    @property
    def topics(self) -> list[str]:
        """Output topic names (after remapping)."""
        return sorted(set(self.out_topic.values()))

    def wait_for_subscribers(self, timeout: float, topics: Sequence[str] | None = None) -> bool:
        """Wait until every publisher (or those on `topics`) has a matched subscription."""
        wanted = [p for cid, p in self.publishers.items() if topics is None or self.out_topic[cid] in topics]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(p.get_subscription_count() > 0 for p in wanted):
                return True
            time.sleep(0.01)
        return all(p.get_subscription_count() > 0 for p in wanted)

    def wait_for_acks(self, timeout: float) -> bool:
        """Wait until reliable subscribers acknowledged everything (so exiting loses nothing).

        Returns early (False) after `stop()`; acknowledgements may take a heartbeat period.
        """
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout
        pending = list(self.publishers.values())
        while pending:
            pending = [p for p in pending if not p.wait_for_all_acked(Duration(nanoseconds=0))]
            if not pending or self._stop.is_set() or time.monotonic() >= deadline:
                break
            pending[0].wait_for_all_acked(Duration(nanoseconds=int(min(0.1, deadline - time.monotonic()) * 1e9)))
        return not pending

    def stop(self) -> None:
        """Ask `run` to return after the current message."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """True once `stop()` was called (SIGINT in the CLI)."""
        return self._stop.is_set()

    def _wait_until(self, target: float) -> bool:
        while not self._stop.is_set():
            left = target - time.monotonic()
            if left <= 0:
                return True
            time.sleep(left - 0.001 if left > 0.002 else 0)
        return False

    def _prefetch(self, out: queue.Queue, halt: threading.Event) -> None:
        """Read one pass of the bag into `out` (a reader thread, so file I/O never delays a publish)."""

        def put(item: object) -> bool:
            while not halt.is_set():
                try:
                    out.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            with open_bag(self.path) as bag:
                conns = [c for c in bag.connections if c.id in self.publishers]
                for conn, t, raw in bag.messages(conns):
                    if not put((conn.id, t, bytes(raw))):
                        return
        except BagError as exc:
            put(exc)
            return
        put(None)

    def _one_pass(self, wall0: float | None, loop_offset: float, on_publish) -> tuple[float | None, int]:
        """Publish one pass; returns (wall clock origin, last bag time)."""
        items: queue.Queue = queue.Queue(maxsize=_PREFETCH)
        halt = threading.Event()
        reader = threading.Thread(target=self._prefetch, args=(items, halt), daemon=True)
        reader.start()
        t0, last = self.start_ns, self.start_ns
        try:
            while not self._stop.is_set():
                try:
                    item = items.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    break
                if isinstance(item, BagError):
                    raise item
                cid, t, raw = item
                if wall0 is None:
                    # The clock starts when the first message is out (its first publish allocates
                    # the writer's buffers): intervals, not the start, are what replay reproduces.
                    self.publishers[cid].publish(raw)
                    now = time.monotonic()
                    wall0 = now - (t - t0) / 1e9 / self.rate
                    planned = now
                else:
                    planned = wall0 + loop_offset + (t - t0) / 1e9 / self.rate
                    if not self._wait_until(planned):
                        break
                    self.publishers[cid].publish(raw)
                    now = time.monotonic()
                self.stats.lag_s.append(now - planned)
                self.stats.published += 1
                topic = self.out_topic[cid]
                self.stats.per_topic[topic] = self.stats.per_topic.get(topic, 0) + 1
                last = t
                if on_publish is not None:
                    on_publish(topic, t, now)
        finally:
            halt.set()
            reader.join()
        return wall0, last

    def run(self, on_publish: Callable[[str, int, float], None] | None = None) -> ReplayStats:
        """Publish everything (again and again with loop) at recorded timing; returns stats.

        `on_publish(topic, bag_time_ns, wall_monotonic)` is called after each message.
        """
        wall0: float | None = None
        loop_offset = 0.0
        while not self._stop.is_set():
            wall0, last = self._one_pass(wall0, loop_offset, on_publish)
            self.stats.loops += 1
            if not self.loop:
                break
            # the next pass starts one mean interval after this one ended, keeping streams even
            span = (last - self.start_ns) / 1e9 / self.rate
            gap = span / (self._stream_len - 1) if self._stream_len > 1 else 1.0 / self.rate
            loop_offset += span + gap
        return self.stats
