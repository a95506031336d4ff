"""Container health check: is an incident node of this robot publishing heartbeats?

    python3 -m ember.deploy.health [--robot-id ID] [--topic /fleet/status] [--timeout 15]

Exit 0 as soon as a RobotStatus arrives (from robot ID when given, else from any robot;
EMBER_ROBOT_ID is the default ID), 1 when none arrives within the timeout. The robot
image's HEALTHCHECK runs it, so a node that died or hangs marks the container unhealthy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

STATUS_TOPIC = "/fleet/status"


def wait_for_heartbeat(robot_id: str | None, topic: str, timeout_s: float) -> str | None:
    """The robot_id of the first heartbeat seen (matching `robot_id` if given), or None on timeout."""
    import rclpy
    from ember_msgs.msg import RobotStatus
    from rclpy.executors import SingleThreadedExecutor

    from ember.ros import runtime
    from ember.ros.qos import STATUS_QOS

    context = rclpy.Context()
    runtime.init(args=[], context=context)
    seen: list[str] = []
    try:
        node = rclpy.create_node(
            "ember_healthcheck", context=context, start_parameter_services=False, enable_rosout=False
        )
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)

        def on_status(msg: RobotStatus) -> None:
            if robot_id is None or msg.robot_id == robot_id:
                seen.append(msg.robot_id)

        node.create_subscription(RobotStatus, topic, on_status, STATUS_QOS)
        deadline = time.monotonic() + timeout_s
        while not seen and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=min(0.2, max(0.0, deadline - time.monotonic())))
        executor.shutdown()
        node.destroy_node()
    finally:
        runtime.shutdown(context=context)
    return seen[0] if seen else None


def main(argv: list[str] | None = None) -> int:
    """Command line of the health check; exit code 0 = healthy."""
    p = argparse.ArgumentParser(prog="python3 -m ember.deploy.health", description=__doc__.split("\n\n")[0])
    p.add_argument("--robot-id", default=os.environ.get("EMBER_ROBOT_ID") or None, help="only this robot's heartbeats")
    p.add_argument("--topic", default=STATUS_TOPIC, help=f"RobotStatus topic (default {STATUS_TOPIC})")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait (default 15)")
    args = p.parse_args(argv)
    who = f"robot {args.robot_id}" if args.robot_id else "any robot"
    try:
        got = wait_for_heartbeat(args.robot_id, args.topic, args.timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to start DDS makes the container unhealthy
        print(f"unhealthy: cannot listen on {args.topic}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if got is None:
        print(f"unhealthy: no heartbeat from {who} on {args.topic} within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(f"healthy: heartbeat from {got} on {args.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
