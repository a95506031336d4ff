"""Spinning Ember nodes: one MultiThreadedExecutor, clean exit on SIGINT/SIGTERM."""

from __future__ import annotations

from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def spin_nodes(nodes: list[Node], threads: int | None = None) -> None:
    """Spin `nodes` on one MultiThreadedExecutor until the context shuts down.

    rclpy's signal handlers turn SIGINT and SIGTERM into a context shutdown, which ends the
    spin here; KeyboardInterrupt is tolerated too. The caller destroys the nodes.
    """
    executor = MultiThreadedExecutor(num_threads=threads or max(4, 2 * len(nodes)))
    for n in nodes:
        executor.add_node(n)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
