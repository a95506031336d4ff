"""`python -m tests.ros.stop_probe <module> [args...]`: run an Ember executable's main() (`python -m
ember.ros.<module>` otherwise) and print, for every node it destroys, whether its rclpy context was
still valid then: `DESTROYED <node> context_ok=<bool>`. Instrumentation only: rclpy's
Node.destroy_node is wrapped to print before it runs; the executable runs unchanged."""

from __future__ import annotations

import importlib
import sys

from rclpy.node import Node

_destroy = Node.destroy_node


def _printing_destroy(self: Node) -> None:
    print(f"DESTROYED {self.get_name()} context_ok={self.context.ok()}", flush=True)
    _destroy(self)


if __name__ == "__main__":
    Node.destroy_node = _printing_destroy
    module = importlib.import_module(f"ember.ros.{sys.argv[1]}")
    sys.argv = [f"ember.ros.{sys.argv[1]}", *sys.argv[2:]]
    module.main()
