"""Starting and stopping rclpy the same way in every Ember process."""

from __future__ import annotations

import os

REQUIRE_LOCAL_DDS_ENV = "EMBER_REQUIRE_LOCAL_DDS"


class DDSEnvironmentError(RuntimeError):
    """DDS would start without the isolation that tests, CI and the demo require."""


def check_dds_environment() -> None:
    """With EMBER_REQUIRE_LOCAL_DDS=1 (tests, CI, demo, benchmarks), refuse to start DDS unless
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID are set."""
    if os.environ.get(REQUIRE_LOCAL_DDS_ENV, "") not in ("1", "true", "yes"):
        return
    problems = []
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        problems.append("ROS_AUTOMATIC_DISCOVERY_RANGE must be LOCALHOST")
    if not os.environ.get("ROS_DOMAIN_ID", "").isdigit():
        problems.append("ROS_DOMAIN_ID must be set to a number")
    if problems:
        raise DDSEnvironmentError(f"{REQUIRE_LOCAL_DDS_ENV} is set but " + " and ".join(problems))


def init(args: list[str] | None = None, context=None) -> None:
    """rclpy.init after the DDS environment check."""
    import rclpy

    check_dds_environment()
    rclpy.init(args=args, context=context)


def shutdown(context=None) -> None:
    """rclpy shutdown that tolerates an already shut-down context (SIGINT handlers)."""
    import rclpy

    try:
        rclpy.try_shutdown(context=context)
    except Exception:  # noqa: BLE001 - shutting down; nothing left to report to
        pass
