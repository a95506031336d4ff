"""Ember's stop request (`runtime.stop_request`) under signals that land at awkward moments.

Python runs a signal handler in the main thread between two bytecodes, wherever that thread is:
also inside rclpy code that holds a Future's (non-reentrant) lock, as `Future.done()` and
`add_done_callback` do in every turn of `spin_until_future_complete`. A handler that completed the
future itself then waited for that lock forever: the CI run of stop 18 saw a camera that never
stopped on SIGINT sent right after READY. Each case runs in a child process, so a hang is a
timeout here, not a hung suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.ros


def run_child(code: str, timeout: float = 30.0) -> str:
    """Run `code` in a fresh interpreter; its stdout. A hang fails the test with what it printed."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child hung (killed after {timeout}s); it printed: {exc.stdout!r} {exc.stderr!r}")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_signal_while_the_main_thread_holds_the_futures_lock_completes_the_request():
    out = run_child("""
        import signal, time
        from ember.ros import runtime
        runtime._STOP.install()
        with runtime.stop_request() as stop:
            with stop._lock:  # where Future.done() / add_done_callback are when the signal lands
                signal.raise_signal(signal.SIGINT)  # the handler runs here, in this thread
            deadline = time.monotonic() + 10
            while not stop.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            print("DONE", stop.done(), stop.result())
    """)
    assert "DONE True 2" in out, out


def test_a_signal_while_the_main_thread_holds_a_done_callbacks_lock_wakes_the_waiter():
    """The same with a done callback (an executor's wake) taking a lock the main thread holds."""
    out = run_child("""
        import signal, threading, time
        from ember.ros import runtime
        runtime._STOP.install()
        lock = threading.Lock()
        woken = threading.Event()
        def wake(_future):
            with lock:
                woken.set()
        with runtime.stop_request() as stop:
            stop.add_done_callback(wake)
            with lock:
                signal.raise_signal(signal.SIGTERM)
            print("WOKEN", woken.wait(10), stop.result())
    """)
    assert "WOKEN True 15" in out, out


def test_a_signal_with_no_request_waiting_raises_keyboard_interrupt_once_and_is_remembered():
    out = run_child("""
        import os, signal, time
        from ember.ros import runtime
        runtime._STOP.install()
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(1)
            print("NOT INTERRUPTED")
        except KeyboardInterrupt:
            print("INTERRUPTED")
        signal.raise_signal(signal.SIGINT)  # a second one while stopping is ignored
        with runtime.stop_request() as stop:  # a request after the signal is complete at once
            print("LATER", stop.done(), stop.result())
    """)
    assert "INTERRUPTED" in out and "NOT INTERRUPTED" not in out, out
    assert "LATER True 2" in out, out
