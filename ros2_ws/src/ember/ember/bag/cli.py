"""`ember-bag`: make, replay, record and inspect rosbag2 bags without `ros2 bag`.

    ember-bag make --images DIR --labels labels.json --out BAG [--storage mcap|sqlite3] [--compressed] [--rate HZ]
    ember-bag replay BAG [--rate 1.0] [--loop] [--remap FROM:=TO ...] [--wait-subscribers S]
    ember-bag record --topics T [T ...] --out BAG [--duration S] [--storage mcap|sqlite3]
    ember-bag info BAG

Errors print one line `ember-bag: error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ember.bag.errors import BagError
from ember.deploy.extras import tool_missing

READY_LINE = "READY"


def _make(args: argparse.Namespace) -> int:
    import math

    from ember.bag.make import DEFAULT_START_NS, make_bag

    if args.start is not None and not math.isfinite(args.start):
        raise BagError(f"--start must be seconds since the epoch, got {args.start}")
    result = make_bag(
        Path(args.out),
        [Path(p) for p in args.images],
        [Path(p) for p in args.labels] if args.labels else [],
        storage=args.storage,
        compressed=args.compressed,
        rate_hz=args.rate,
        start_ns=round(args.start * 1e9) if args.start is not None else DEFAULT_START_NS,
        max_side=args.max_side,
        frame_id=args.frame_id,
        image_topic=args.topic,
        task=args.task,
    )
    print(f"wrote {result.path}: {result.frames} frames on {result.image_topic} + /ember/ground_truth, "
          f"{result.duration_s:.2f} s, {args.storage}")
    for key in result.skipped_missing:
        print(f"skipped {key}: image file missing", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from ember.bag.io import open_bag, storage_of
    from ember.bag.types import rclpy_class

    with open_bag(args.bag) as bag:
        r = bag.reader
        print(f"bag: {args.bag} ({storage_of(Path(args.bag))}), {r.message_count} messages, {r.duration / 1e9:.3f} s")
        for c in sorted(bag.connections, key=lambda c: c.topic):
            defined = "definition" if c.msgdef.data.strip() else "no definition"
            py = "python interface" if rclpy_class(c.msgtype) else "no python interface"
            print(f"  {c.topic}  {c.msgtype}  {c.msgcount} msgs  ({defined}, {py})")
        for note in bag.notes:
            print(f"note: {note}")
    return 0


def _with_node(name: str):
    from ember.ros import runtime

    runtime.init(args=sys.argv[:1])  # our own arguments (FROM:=TO remaps) are not ROS arguments
    import rclpy

    return rclpy.create_node(name)


def _replay(args: argparse.Namespace) -> int:
    import signal

    from rclpy.signals import uninstall_signal_handlers

    from ember.bag.replay import Replayer, parse_remaps
    from ember.ros import runtime

    remap = parse_remaps(args.remap or [])
    node = _with_node("ember_bag_replay")
    try:
        replayer = Replayer(node, args.bag, rate=args.rate, loop=args.loop, remap=remap, topics=args.topics,
                            skip_unknown=args.skip_unknown)
        for topic in replayer.stats.skipped_topics:
            print(f"skipping {topic}", file=sys.stderr)
        uninstall_signal_handlers()  # SIGINT/SIGTERM end the replay after the current message
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: replayer.stop())
        print(READY_LINE, flush=True)
        if args.wait_subscribers > 0 and not replayer.wait_for_subscribers(args.wait_subscribers):
            print(f"ember-bag: warning: not every topic had a subscriber after {args.wait_subscribers} s", file=sys.stderr)
        stats = replayer.run()
        if not replayer.wait_for_acks(args.ack_timeout) and not replayer.stopped:
            print(f"ember-bag: warning: reliable subscribers had not acknowledged everything after {args.ack_timeout} s",
                  file=sys.stderr)
        print(stats.summary(), flush=True)
    finally:
        node.destroy_node()
        runtime.shutdown()
    return 0


def _record(args: argparse.Namespace) -> int:
    import signal
    import threading

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import uninstall_signal_handlers

    from ember.bag.record import Recorder
    from ember.ros import runtime

    node = _with_node("ember_bag_record")
    # Our own SIGINT/SIGTERM handling: stop taking new messages, then drain what DDS already
    # delivered, then close the bag (rclpy's handler would shut the context down first).
    uninstall_signal_handlers()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        recorder = Recorder(node, args.out, args.topics, storage=args.storage)
    except BagError:
        node.destroy_node()
        runtime.shutdown()
        raise
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print(READY_LINE, flush=True)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.05)
        _drain(executor, recorder)
    finally:
        counts = recorder.close()
        executor.shutdown()
        node.destroy_node()
        runtime.shutdown()
    print(f"wrote {args.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()), flush=True)
    for err in recorder.errors:
        print(f"ember-bag: error: {err}", file=sys.stderr)
    return 1 if recorder.errors else 0


def _drain(executor, recorder, quiet_s: float = 0.2, limit_s: float = 2.0) -> None:
    """Take the messages DDS has already delivered (until none came for `quiet_s`)."""
    end = time.monotonic() + limit_s
    last, quiet_since = sum(recorder.counts.values()), time.monotonic()
    while time.monotonic() < end and time.monotonic() - quiet_since < quiet_s:
        executor.spin_once(timeout_sec=0.02)
        now = sum(recorder.counts.values())
        if now != last:
            last, quiet_since = now, time.monotonic()


def build_parser() -> argparse.ArgumentParser:
    from ember.bag.io import STORAGES  # rosbags: imported here, so that main() can say it is missing

    parser = argparse.ArgumentParser(prog="ember-bag", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    mk = sub.add_parser("make", help="a bag of camera images + ground truth from image folders")
    mk.add_argument("--images", action="append", required=True, help="image directory (repeatable)")
    mk.add_argument("--labels", action="append", help="labels JSON for the matching --images (repeatable)")
    mk.add_argument("--out", required=True, help="bag directory to create")
    mk.add_argument("--storage", choices=STORAGES, default="mcap")
    mk.add_argument("--compressed", action="store_true", help="sensor_msgs/CompressedImage (jpeg) instead of Image")
    mk.add_argument("--rate", type=float, default=2.0, help="frames per second (default 2)")
    mk.add_argument("--max-side", type=int, default=640, help="downscale larger images to this side (0 keeps size)")
    mk.add_argument("--start", type=float, help="timestamp of the first frame, seconds since the epoch")
    mk.add_argument("--topic", help="camera topic (default /camera/image_raw[/compressed])")
    mk.add_argument("--frame-id", default="camera")
    mk.add_argument("--task", help="task recorded in the ground truth of rows that have none")
    mk.set_defaults(func=_make)

    rp = sub.add_parser("replay", help="publish a bag over rclpy at its recorded timing")
    rp.add_argument("bag")
    rp.add_argument("--rate", type=float, default=1.0, help="speed factor (2 = twice as fast)")
    rp.add_argument("--loop", action="store_true")
    rp.add_argument("--remap", nargs="+", action="extend", metavar="FROM:=TO")
    rp.add_argument("--topics", nargs="+", help="replay only these topics")
    rp.add_argument("--skip-unknown", action="store_true", help="replay the other topics when some cannot be published")
    rp.add_argument("--wait-subscribers", type=float, default=0.0, metavar="S",
                    help="wait up to S seconds for a subscriber on every topic before starting")
    rp.add_argument("--ack-timeout", type=float, default=5.0, metavar="S",
                    help="at the end, wait up to S seconds for reliable subscribers to acknowledge")
    rp.set_defaults(func=_replay)

    rc = sub.add_parser("record", help="record topics into a bag")
    rc.add_argument("--topics", nargs="+", required=True)
    rc.add_argument("--out", required=True)
    rc.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C)")
    rc.add_argument("--storage", choices=STORAGES, default="mcap")
    rc.set_defaults(func=_record)

    inf = sub.add_parser("info", help="topics, types and counts of a bag")
    inf.add_argument("bag")
    inf.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except BagError as exc:
        print(f"ember-bag: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # rosbags: a tool, not in a robot's minimal install
        if (message := tool_missing(exc)) is None:
            raise
        print(f"ember-bag: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
