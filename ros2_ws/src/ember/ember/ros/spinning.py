"""Spinning Ember nodes: one MultiThreadedExecutor, clean exit on SIGINT/SIGTERM."""

from __future__ import annotations

from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def spin_nodes(nodes: list[Node], threads: int | None = None, multi_threaded: bool = True) -> None:
    """Spin `nodes` on one executor (multi-threaded unless told otherwise) until shutdown.

    rclpy's Python executors rebuild their wait set for every callback, the multi-threaded
    one at a higher cost: a node whose callbacks never block (the fleet manager) runs
    cheaper on the single-threaded one.

    rclpy's signal handlers turn SIGINT and SIGTERM into a context shutdown, which ends the
    spin here; KeyboardInterrupt is tolerated too. The caller destroys the nodes.
    """
    executor = (
        MultiThreadedExecutor(num_threads=threads or max(4, 2 * len(nodes))) if multi_threaded else SingleThreadedExecutor()
    )
    for n in nodes:
        executor.add_node(n)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
