"""Starting and stopping rclpy the same way in every Ember process, and the node conventions they
share: parameter descriptors (read-only or range-checked) and a wall-time clock for liveness timers."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop an Ember process."""


class _StopSignals:
    """SIGINT/SIGTERM as a stop request, in place of rclpy's handlers.

    rclpy's handlers shut the context down from their own thread while the main thread, woken by
    that, already tears the nodes down: a native crash under load (SIGSEGV in Service.destroy,
    GuardCondition.trigger). Here a signal only completes the futures of the loops that wait for it
    (`stop_request`), which wakes their executors; the main thread then destroys the nodes and shuts
    the context down, in that order. A Python handler alone runs only once the main thread leaves
    the executor's wait, which a node whose only timer runs on a paused simulated clock never does:
    so the signal also goes to a pipe (signal.set_wakeup_fd), read by a thread that completes the
    futures. Only that thread completes them: the Python handler runs in the main thread between two
    bytecodes, also inside rclpy code holding a Future's non-reentrant lock (`Future.done()`,
    `add_done_callback`, every turn of `spin_until_future_complete`), so completing a future there
    waited forever for that lock (a camera that never stopped on SIGINT right after READY, in CI).
    The handler only records the signal, without a lock. With no Ember loop waiting (a client such
    as ember-task, ember-fleet while it builds its nodes), the first signal raises KeyboardInterrupt
    in the main thread, as Python's default handler does; later signals are ignored while the
    process stops."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # the watch thread and request(); never the signal handler
        self.signum = 0
        self._waiting: set[Any] = set()
        self._consumed = False
        self.installed = False

    def install(self) -> None:
        """Handlers, the wakeup pipe and its reader thread (once; in the main thread)."""
        if self.installed:
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_fd,), name="ember-stop-signals", daemon=True).start()
        self.installed = True

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """In the main thread, wherever it is: no lock, no future (the watch thread completes them)."""
        self.signum = self.signum or signum
        if self._waiting or self._consumed:
            return
        self._consumed = True
        raise KeyboardInterrupt

    def _watch(self, fd: int) -> None:
        while True:
            for signum in os.read(fd, 64):
                if signum in STOP_SIGNALS:
                    with self._lock:
                        self._request(signum)

    def _request(self, signum: int) -> None:
        """Record the stop and complete the waiting futures (their done callbacks wake executors)."""
        self.signum = self.signum or signum
        for future in self._waiting:
            if not future.done():
                future.set_result(self.signum)

    @contextmanager
    def request(self) -> Iterator[Any]:
        from rclpy.task import Future

        future: Future = Future()
        with self._lock:
            self._waiting.add(future)
            if self.signum and not future.done():
                future.set_result(self.signum)
        try:
            yield future
        finally:
            with self._lock:  # a wake in flight ends before the executor can be shut down
                self._consumed = self._consumed or bool(self.signum)
                self._waiting.discard(future)


_STOP = _StopSignals()


def stop_request() -> Any:
    """A context manager giving an rclpy Future that completes (with the signal number) once
    SIGINT/SIGTERM came, also before the block began: spin an executor until it completes
    (`executor.spin_until_future_complete(future)`), then destroy the nodes, then `shutdown()`.
    Leaving the block (before shutting the executor down) waits for a wake in flight."""
    return _STOP.request()


def init(args: list[str] | None = None, context=None) -> None:
    """rclpy.init after the DDS environment check (and stop_with_parent). A native crash (a
    segfault in a DDS or onnxruntime thread) prints every thread's Python stack to stderr
    (faulthandler), so the robot's log says where it happened.

    For the process's default context (an executable), SIGINT/SIGTERM are Ember's (see
    `stop_request`) instead of rclpy's; a caller with a context of its own (a test, a library
    inside another program) keeps rclpy's."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    faulthandler.enable(all_threads=True)
    check_dds_environment()
    stop_with_parent()
    own = context is None and threading.current_thread() is threading.main_thread()
    if own:
        _STOP.install()
    rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO if own else None)


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
