"""Helpers for tests that talk DDS: child processes and waiting on conditions (never sleeping)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

ROOT = Path(__file__).resolve().parents[2]


def spin_until(executor: SingleThreadedExecutor, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Spin `executor` until `predicate()` holds or `timeout` seconds pass; returns the predicate."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.05)
    return predicate()


@contextmanager
def child_process(args: list[str], ready_line: str = "READY", timeout: float = 30.0, env: dict | None = None):
    """Start `python args...` in the repo root, wait for `ready_line` on stdout, stop it with SIGINT after."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{args} exited early (rc={proc.poll()}):\n{''.join(lines)}")
            lines.append(line)
            if line.strip() == ready_line:
                break
        else:
            raise RuntimeError(f"{args} not ready after {timeout}s:\n{''.join(lines)}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def ros_node(name: str):
    """An rclpy context + node + executor for the test process, torn down afterwards."""
    from ember.ros import runtime

    context = rclpy.Context()
    runtime.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        runtime.shutdown(context=context)
