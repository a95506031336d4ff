"""Starting and stopping rclpy the same way in every Ember process, and the node conventions they
share: parameter descriptors (read-only or range-checked) and a wall-time clock for liveness timers."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import sys
from typing import Any

REQUIRE_LOCAL_DDS_ENV = "EMBER_REQUIRE_LOCAL_DDS"
STOP_WITH_PARENT_ENV = "EMBER_STOP_WITH_PARENT"
"""Set by ember-fleet's processes mode to its pid: the child node stops when that process dies."""
PR_SET_PDEATHSIG = 1


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


def stop_with_parent() -> None:
    """With EMBER_STOP_WITH_PARENT=<pid> (ember-fleet's children): have the kernel send SIGTERM
    when the parent dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG), so no node is left
    running, orphaned, on the robot. A parent already gone is the same SIGTERM, now."""
    parent = os.environ.get(STOP_WITH_PARENT_ENV, "")
    if not parent.isdigit():
        return
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):  # died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def init(args: list[str] | None = None, context=None) -> None:
    """rclpy.init after the DDS environment check (and stop_with_parent). A native crash (a
    segfault in a DDS or onnxruntime thread) prints every thread's Python stack to stderr
    (faulthandler), so the robot's log says where it happened."""
    import rclpy

    faulthandler.enable(all_threads=True)
    check_dds_environment()
    stop_with_parent()
    rclpy.init(args=args, context=context)


def shutdown(context=None) -> None:
    """rclpy shutdown that tolerates an already shut-down context (SIGINT handlers)."""
    import rclpy

    try:
        rclpy.try_shutdown(context=context)
    except Exception:  # noqa: BLE001 - shutting down; nothing left to report to
        pass



def read_only(description: str) -> Any:
    """A descriptor for a parameter read once at start: `ros2 param set` is refused, not ignored."""
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=description, read_only=True)


def number_range(description: str, low: float, high: float, *, integer: bool = False, read_only: bool = False) -> Any:
    """A descriptor limiting a number to [low, high] (NaN refused), at start and at `ros2 param set`;
    `ros2 param describe` shows the limits."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = ParameterDescriptor(description=description, read_only=read_only)
    if integer:
        desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    else:
        desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return desc


def steady_clock() -> Any:
    """A clock that always runs in wall time, also under use_sim_time: for heartbeats and
    /diagnostics, which tell that a process lives while a simulation is paused or slow."""
    from rclpy.clock import Clock, ClockType

    return Clock(clock_type=ClockType.STEADY_TIME)
