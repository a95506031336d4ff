"""Helpers for the fleet tests: child processes with captured output, fleet files, diagnostics."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from ember.ros.qos import DIAGNOSTICS_QOS
from tests.ros.helpers import spin_until

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A `python ...` child process (or `program ...`, in a process group of its own) in the repo
    root whose output (stdout+stderr) is collected."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, program: str | None = None) -> None:
        self.args = args
        self.group = program is not None  # a program may start children of its own: signal them all
        self.proc = subprocess.Popen(
            [program or sys.executable, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
            start_new_session=self.group,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """The first output line matching `pattern` (regex), waiting up to `timeout` s."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"{self.args} exited ({self.proc.returncode}) before {pattern!r}:\n{self.output()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.args}: no line {pattern!r} after {timeout}s:\n{self.output()}")
                self._cond.wait(min(left, 0.5))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send `sig` (if running), wait, kill after `timeout`; the exit code."""
        if self.proc.poll() is None:
            if self.group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if self.group:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.args} did not stop on signal {sig} within {timeout}s:\n{self.output()}") from None
        self._reader.join(timeout=10)
        return self.proc.returncode


def started_pids(proc: Proc) -> dict[str, int]:
    """fqn -> pid of every `STARTED <fqn> pid=<pid>` line (ember-fleet's output)."""
    return {parts[1]: int(parts[2].split("=")[1]) for parts in (ln.split() for ln in proc.lines if ln.startswith("STARTED"))}


def alive(pid: int) -> bool:
    """The process runs: it exists and is not a zombie (exited, not yet reaped by its new parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def assert_no_orphans(pids: dict[str, int]) -> None:
    """Every child is gone once ember-fleet has exited (orphans are killed, then reported)."""
    left = {fqn: pid for fqn, pid in pids.items() if alive(pid)}
    for pid in left.values():
        os.kill(pid, signal.SIGKILL)
    assert not left, f"children still running after ember-fleet exited: {left}"


def exit_code(proc: Proc, timeout: float, failure: str) -> int:
    """`proc`'s exit code once it ends by itself; past `timeout` it is stopped and the test fails with
    `failure` (and the exit code of the stop), its output and no orphan children left."""
    import pytest

    try:
        return proc.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = proc.stop(signal.SIGINT)
        pytest.fail(f"{failure} (then exit {rc}):\n{proc.output()}")
    finally:
        assert_no_orphans(started_pids(proc))


def write_fleet(path: Path, bundle: Path, robots: list[tuple[str, str]], **sections: Any) -> Path:
    """A fleet file with these (id, type) robots; `sections` (inference=..., manager=..., cameras=...)."""
    data: dict[str, Any] = {"bundle": str(bundle), "robots": [{"id": i, "type": t} for i, t in robots]}
    data.update(sections)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_params(path: Path, fqn: str, params: dict[str, Any]) -> Path:
    """A --params-file for one node."""
    path.write_text(yaml.safe_dump({fqn: {"ros__parameters": params}}))
    return path


@contextlib.contextmanager
def node_process(module: str, fqn: str, params: dict[str, Any], workdir: Path, ros_args: tuple[str, ...] = ()) -> Iterator[Proc]:
    """`python -m <module>` as node `fqn` (/<ns>/<name>) with these parameters, READY, until the block
    ends (it must then exit 0 on SIGINT)."""
    ns, _, name = fqn.rpartition("/")
    pf = write_params(workdir / f"{name}_params.yaml", fqn, params)
    args = ["-m", module, "--ros-args", "-r", f"__ns:={ns or '/'}", "-r", f"__node:={name}", *ros_args, "--params-file", str(pf)]
    proc = Proc(args)
    try:
        proc.wait_for_line(r"^READY$", timeout=90)
        yield proc
    finally:
        rc = proc.stop()
        print(proc.output())
    assert rc == 0, proc.output()


def fleet_manager_process(workdir: Path, params: dict[str, Any]) -> contextlib.AbstractContextManager[Proc]:
    """The fleet manager in its own process with these parameters, until the block ends (its
    output is printed then; it must exit 0 on SIGINT)."""
    return node_process("ember.ros.fleet_manager", "/fleet_manager", params, workdir)


class Diagnostics:
    """The latest /diagnostics values per status name."""

    def __init__(self, node) -> None:
        self.latest: dict[str, dict[str, str]] = {}
        self.count: dict[str, int] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, DIAGNOSTICS_QOS)

    def _on(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            self.latest[st.name] = {kv.key: kv.value for kv in st.values}
            self.count[st.name] = self.count.get(st.name, 0) + 1

    def get(self, name: str, key: str, default: float = -1.0) -> float:
        try:
            return float(self.latest[name][key])
        except (KeyError, ValueError):
            return default

    def fresh(self, executor, name: str, timeout: float = 15.0) -> dict[str, str]:
        """Wait for the next diagnostics message of `name` and return its values."""
        before = self.count.get(name, 0)
        assert spin_until(executor, lambda: self.count.get(name, 0) > before, timeout), f"no diagnostics from {name}"
        return self.latest[name]


def set_parameter(node, executor, target_node: str, name: str, value: Any, timeout: float = 20.0) -> None:
    """Set one parameter of a running node through its set_parameters service."""
    client = node.create_client(SetParameters, f"{target_node}/set_parameters")
    assert spin_until(executor, client.service_is_ready, timeout), f"{target_node}/set_parameters not available"
    if isinstance(value, bool):
        pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, float):
        pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        raise TypeError(value)
    req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)])
    future = client.call_async(req)
    assert spin_until(executor, future.done, timeout), "set_parameters did not answer"
    assert future.result().results[0].successful, future.result().results[0].reason
    node.destroy_client(client)
