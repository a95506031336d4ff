"""Spinning Ember nodes: one MultiThreadedExecutor, clean exit on SIGINT/SIGTERM."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from ember.ros import runtime


def stopped_by_signal(exc: BaseException, context: Any) -> bool:
    """Whether `exc`, raised out of rclpy, is a stop rather than a failure: KeyboardInterrupt,
    ExternalShutdownException, or any error once `context` is shut down (a signal that lands while
    an executor is created or builds its wait set surfaces as RCLError "the given context is not
    valid")."""
    return isinstance(exc, (KeyboardInterrupt, ExternalShutdownException)) or not context.ok()


def spin_nodes(
    nodes: list[Node], threads: int | None = None, multi_threaded: bool = True, on_ready: Callable[[], None] | None = None
) -> None:
    """Spin `nodes` on one executor (multi-threaded unless told otherwise) until SIGINT/SIGTERM.

    rclpy's Python executors rebuild their wait set for every callback, the multi-threaded
    one at a higher cost: a node whose callbacks never block (the fleet manager) runs
    cheaper on the single-threaded one.

    The spin ends when Ember's stop request completes (`runtime.stop_request`: a signal, also one
    that came before, wakes the executor, whatever its timers' clock does) or, in a process that kept
    rclpy's signal handlers, when the context is shut down; KeyboardInterrupt is tolerated too.
    `on_ready` (printing READY) runs once the executor holds the nodes, so a signal right after it
    meets a running executor. The executor is shut down here; the caller destroys the nodes, then
    shuts the context down.
    """
    executor = None
    try:
        with runtime.stop_request() as stop:
            executor = (
                MultiThreadedExecutor(num_threads=threads or max(4, 2 * len(nodes)))
                if multi_threaded
                else SingleThreadedExecutor()
            )
            for n in nodes:
                executor.add_node(n)
            if on_ready is not None:
                on_ready()
            executor.spin_until_future_complete(stop)
    except (KeyboardInterrupt, Exception) as exc:
        if not stopped_by_signal(exc, nodes[0].context):
            raise
    finally:
        if executor is not None:
            executor.shutdown()


def print_ready() -> None:
    """The READY line launchers and tests wait for."""
    print("READY", flush=True)


def exit_now(code: int) -> NoReturn:
    """Leave a stopped node process (nodes destroyed, context shut down) without the interpreter's
    teardown, where rclpy's and Fast DDS's C++ objects (threads still joinable) are destroyed in no
    set order: that aborted the fleet manager once in CI ('terminate called without an active
    exception' after a clean stop, exit 134 instead of 0)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_node(
    make_node: Callable[[], Node], name: str, args: list[str] | None = None, multi_threaded: bool = True
) -> NoReturn:
    """The `main()` of a one-node executable: init, build the node (a construction error is
    one clear line and exit 1), print READY, spin until SIGINT/SIGTERM, destroy the node, shut the
    context down, exit 0. A stop signal while the node is being built ends it once built."""
    with runtime.stop_request():  # for the whole life: a stop signal never raises KeyboardInterrupt here
        runtime.init(args=args)
        try:
            node = make_node()
        except Exception as exc:  # noqa: BLE001 - a clear message instead of a traceback
            print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            runtime.shutdown()
            sys.exit(1)
        try:
            spin_nodes([node], multi_threaded=multi_threaded, on_ready=print_ready)
        finally:
            node.destroy_node()
            runtime.shutdown()
    exit_now(0)
