"""`ember-fleet`: start the fleet of config/fleet.yaml without `ros2 launch` (embedded default).

    ember-fleet --config config/fleet.yaml [--bundle DIR] [--mode composed|processes]
                [--robots drone_1,legged_1] [--no-cameras] [--no-manager] [--no-robots] [--dry-run]

On a robot computer: `--robots drone_1 --no-manager --no-cameras` (its own incident node); on
the base station: `--no-robots` (the fleet manager alone).

The nodes and their parameters come from `FleetConfig.node_descriptions()`, exactly as in
launch/fleet.launch.py. `composed` (default) runs them all in this process on one
MultiThreadedExecutor; `processes` starts one child process per node (`python -m <module>
--ros-args -r __node:=... -r __ns:=... --params-file ...`), printing `STARTED <node> pid=<pid>`
for each. READY is printed once every node exists (in processes mode: once every child printed
its own READY, which ember-fleet does not pass on). SIGINT, SIGTERM and SIGHUP (a closed
terminal) stop everything cleanly, exit 0. A node that cannot start stops the fleet: exit 1. In
processes mode a child that dies after READY is reported and the rest keep running; it is started
again (same params file and environment) when its node's fleet.yaml `respawn` is on, after
respawn.delay_s, at most respawn.max_restarts times within respawn.window_s, then given up in one
line. When no child runs or waits for its respawn, ember-fleet exits 1. Composed mode cannot
respawn (one process) and says so in one line. If ember-fleet itself is killed (`kill -9`, the
OOM killer), the kernel sends every child SIGTERM (EMBER_STOP_WITH_PARENT, see
ember.ros.runtime): no node runs on orphaned.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import yaml

from ember.fleet_config import (
    FleetConfig,
    FleetConfigError,
    NodeDescription,
    RespawnConfig,
    dds_environment,
    load,
)
from ember.ros.runtime import STOP_WITH_PARENT_ENV, DDSEnvironmentError, check_dds_environment

MODES = ("composed", "processes")
COMPOSED_RESPAWN_NOTE = (
    "ember-fleet: respawn (fleet.yaml) needs --mode processes: in composed mode every node shares this process "
    "and is not restarted"
)


def node_class(executable: str) -> type:
    """The Node subclass behind an ember executable (for composed mode)."""
    if executable == "incident_node":
        from ember.ros.incident_node import IncidentNode

        return IncidentNode
    if executable == "fleet_manager":
        from ember.ros.fleet_manager import FleetManager

        return FleetManager
    if executable == "ember-camera":
        from ember.ros.camera import CameraNode

        return CameraNode
    raise ValueError(f"no node class for executable {executable!r}")


def select(
    cfg: FleetConfig, robots: list[str] | None, cameras: bool, manager: bool, incident_nodes: bool = True
) -> list[NodeDescription]:
    """The config's node descriptions, optionally only some robots / without cameras, manager or
    incident nodes (a base station runs only the manager)."""
    if robots:
        unknown = sorted(set(robots) - {r.id for r in cfg.robots})
        if unknown:
            known = ", ".join(r.id for r in cfg.robots)
            raise FleetConfigError(f"robots: no robot {', '.join(unknown)} in {cfg.path} (it has {known})")
    out = []
    for d in cfg.node_descriptions():
        if d.executable == "fleet_manager":
            if manager:
                out.append(d)
            continue
        rid = d.namespace.strip("/")
        if not incident_nodes or (robots and rid not in robots):
            continue
        if d.executable == "ember-camera" and not cameras:
            continue
        out.append(d)
    return out


def command_line(desc: NodeDescription, params_file: str) -> list[str]:
    """argv of the child process running one node."""
    argv = [sys.executable, "-m", desc.module, "--ros-args", "-r", f"__node:={desc.name}"]
    if desc.namespace:
        argv += ["-r", f"__ns:={desc.namespace}"]
    for src, dst in desc.remappings:
        argv += ["-r", f"{src}:={dst}"]
    return argv + ["--params-file", params_file]


def composed_kwargs(desc: NodeDescription) -> dict[str, Any]:
    """Keyword arguments of the Node subclass for one description (composed mode)."""
    from rclpy.parameter import Parameter

    cli: list[str] = []
    for src, dst in desc.remappings:
        cli += ["-r", f"{src}:={dst}"]
    return {
        "node_name": desc.name,
        "namespace": desc.namespace or None,
        "parameter_overrides": [Parameter(k, value=v) for k, v in desc.parameters.items()],
        "cli_args": ["--ros-args", *cli] if cli else None,
        "use_global_arguments": False,
    }


def _sighup_stops_like_sigterm() -> None:
    """A closed terminal (SIGHUP) stops the composed fleet as SIGTERM does, cleanly: Ember's stop
    handlers (ember.ros.runtime.stop_request) take only SIGINT/SIGTERM. SIGHUP is blocked here, before rclpy, numpy or onnxruntime start
    threads (which inherit the mask), and a thread waiting for it sends this process SIGTERM. A
    Python handler doing the same covers a thread started earlier (it runs once the main thread
    leaves the executor's wait, which the nodes' timers end within a second)."""

    def to_sigterm(*_: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def forward() -> None:
        signal.sigwait({signal.SIGHUP})
        to_sigterm()

    signal.signal(signal.SIGHUP, to_sigterm)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    threading.Thread(target=forward, name="sighup-to-sigterm", daemon=True).start()


def run_composed(nodes: list[NodeDescription]) -> int:
    """All nodes in this process, one executor; returns the exit code.

    SIGINT/SIGTERM (and SIGHUP) are Ember's stop request (ember.ros.runtime.stop_request) for the
    whole run: a signal while the nodes are being built stops them once built, then every node is
    destroyed before the context is shut down."""
    _sighup_stops_like_sigterm()  # first: before the imports below start threads
    from ember.ros import runtime
    from ember.ros.spinning import print_ready, spin_nodes

    with runtime.stop_request():
        runtime.init()
        created = []
        try:
            for d in nodes:
                created.append(node_class(d.executable)(**composed_kwargs(d)))
                print(f"STARTED {d.fqn} pid={os.getpid()}", flush=True)
        except Exception as exc:  # noqa: BLE001 - report which node failed and stop the others
            print(f"ember-fleet: cannot start {d.fqn}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            for n in created:
                n.destroy_node()
            runtime.shutdown()
            return 1
        try:
            spin_nodes(created, on_ready=print_ready)
        finally:
            for n in reversed(created):
                n.destroy_node()
            runtime.shutdown()
    print("ember-fleet: stopped", flush=True)
    return 0


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that stop the fleet in processes mode. SIGHUP too: the children run in sessions of
their own, so a closed terminal (or a dropped ssh session) reaches only ember-fleet."""


def _say(text: str, err: bool = False) -> None:
    """print + flush that survives a closed terminal (EIO / EPIPE after SIGHUP)."""
    try:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
    except OSError:
        pass


def _pass_on_output(proc: subprocess.Popen, ready: threading.Event, lock: threading.Lock) -> None:
    """Copy a child's stdout to ours, except its own READY line (which sets `ready`):
    ember-fleet prints one READY, for the whole fleet."""
    for line in proc.stdout:
        if not ready.is_set() and line.rstrip("\n") == "READY":
            ready.set()
            continue
        with lock:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except OSError:
                pass


class RestartBudget:
    """The restarts of one node within its respawn.window_s: the bound that ends a crash loop."""

    def __init__(self, respawn: RespawnConfig) -> None:
        self.respawn = respawn
        self.times: deque[float] = deque()

    def take(self, now: float) -> int:
        """Count a restart at `now` (monotonic s): its number within the window, 0 if none is left."""
        while self.times and now - self.times[0] > self.respawn.window_s:
            self.times.popleft()
        if len(self.times) >= self.respawn.max_restarts:
            return 0
        self.times.append(now)
        return len(self.times)


class ProcessFleet:
    """One child process per node: started, awaited (READY), respawned, stopped in order."""

    def __init__(self, nodes: list[NodeDescription], workdir: Path) -> None:
        self.nodes = {d.fqn: d for d in nodes}
        # one params file per node for its whole run: a respawned child gets the same one
        self.params = {d.fqn: d.write_params_file(workdir, i) for i, d in enumerate(nodes)}
        self.env = {**os.environ, STOP_WITH_PARENT_ENV: str(os.getpid())}  # a kill -9 here still stops them
        self.children: dict[str, subprocess.Popen] = {}  # the latest process of each node, in start order
        self.ready: dict[str, threading.Event] = {}
        self.readers: dict[str, threading.Thread] = {}
        self.old_readers: list[threading.Thread] = []
        self.out_lock = threading.Lock()
        self.signal = 0

    def on_signal(self, signum: int, _frame: Any) -> None:
        """A stop signal: the loops notice it; never raised into Popen mid-start."""
        self.signal = signum

    def start(self, fqn: str) -> None:
        """Start (or start again) the child of node `fqn`, with its params file and the fleet's environment."""
        # own process group: a terminal's Ctrl-C reaches ember-fleet, which stops the children in order
        proc = subprocess.Popen(
            command_line(self.nodes[fqn], str(self.params[fqn])), start_new_session=True, stdout=subprocess.PIPE,
            text=True, bufsize=1, env=self.env,
        )
        if fqn in self.readers:
            self.old_readers.append(self.readers[fqn])
        self.children[fqn], self.ready[fqn] = proc, threading.Event()
        self.readers[fqn] = threading.Thread(target=_pass_on_output, args=(proc, self.ready[fqn], self.out_lock), daemon=True)
        self.readers[fqn].start()
        _say(f"STARTED {fqn} pid={proc.pid}")

    def _exited_before_ready(self, fqn: str) -> bool:
        if self.ready[fqn].is_set() or self.children[fqn].poll() is None:
            return False
        self.readers[fqn].join(timeout=5)  # a READY printed just before exiting still counts
        return not self.ready[fqn].is_set()

    def wait_ready(self) -> str | None:
        """Wait until every child printed READY; the first node whose child exited before that, if any."""
        while not self.signal and not all(e.is_set() for e in self.ready.values()):
            failed = next((fqn for fqn in self.children if self._exited_before_ready(fqn)), None)
            if failed is not None:
                return failed
            time.sleep(0.1)
        return None

    def supervise(self, poll_s: float = 0.1) -> int:
        """After READY: report children that exit and respawn those whose node asks for it (within
        its bound), until a stop signal (exit code 0) or until no node runs or waits for its
        respawn (1)."""
        alive = set(self.children)
        due: dict[str, float] = {}  # fqn -> monotonic time of its respawn
        coming_back: set[str] = set()  # respawned, not READY yet
        budgets = {fqn: RestartBudget(d.respawn) for fqn, d in self.nodes.items()}
        while (alive or due) and not self.signal:
            now = time.monotonic()
            for fqn in [f for f in self.children if f in alive]:
                code = self.children[fqn].poll()
                if code is None:
                    if fqn in coming_back and self.ready[fqn].is_set():
                        coming_back.discard(fqn)
                        _say(f"ember-fleet: {fqn} is up again (pid={self.children[fqn].pid})", err=True)
                    continue
                alive.discard(fqn)
                coming_back.discard(fqn)
                _say(f"ember-fleet: {fqn} exited with code {code}", err=True)
                respawn = self.nodes[fqn].respawn
                if respawn.enabled and code == 0:
                    # a node that ends by itself (a camera at the end of --no-loop images) is done, not broken
                    _say(f"ember-fleet: {fqn} finished (exit code 0): not respawned", err=True)
                elif respawn.enabled:
                    n = budgets[fqn].take(now)
                    if n:
                        due[fqn] = now + respawn.delay_s
                        _say(f"ember-fleet: respawning {fqn} in {respawn.delay_s:g}s (restart {n} of at most "
                             f"{respawn.max_restarts} within {respawn.window_s:g}s)", err=True)
                    else:
                        _say(f"ember-fleet: {fqn} exited {respawn.max_restarts + 1} times within {respawn.window_s:g}s "
                             f"(respawn.max_restarts {respawn.max_restarts}); giving up on it", err=True)
            for fqn in [f for f, t in due.items() if t <= now]:
                if self.signal:
                    break
                del due[fqn]
                self.start(fqn)
                alive.add(fqn)
                coming_back.add(fqn)
            time.sleep(poll_s)
        return 0 if self.signal else 1

    def stop(self, timeout: float) -> None:
        """SIGINT every running child, then wait for each in start order (SIGKILL after `timeout` s)."""
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for fqn, proc in self.children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(f"ember-fleet: {fqn} did not stop in {timeout:g}s; killing it", err=True)
                proc.kill()
                proc.wait()
        for t in [*self.old_readers, *self.readers.values()]:
            t.join(timeout=5)


def run_processes(nodes: list[NodeDescription], stop_timeout: float = 15.0) -> int:
    """One child process per node; returns the exit code.

    READY is printed once every child has printed its own READY (its node exists and its
    signal handlers are installed). A child that exits before that is a node that cannot
    start: the others are stopped and the exit code is 1, as in composed mode. After READY, a
    child that exits is reported and, if its node's `respawn` says so, started again
    (ProcessFleet.supervise).
    """
    tmp = Path(tempfile.mkdtemp(prefix="ember-fleet-"))
    fleet = ProcessFleet(nodes, tmp)
    old = {s: signal.signal(s, fleet.on_signal) for s in STOP_SIGNALS}
    rc = 0
    try:
        for fqn in fleet.nodes:
            if fleet.signal:
                break
            fleet.start(fqn)
        failed = fleet.wait_ready()
        if failed is not None:
            code = fleet.children[failed].returncode
            _say(f"ember-fleet: cannot start {failed}: it exited with code {code} (see its output above)", err=True)
            rc = 1
        elif not fleet.signal:
            _say("READY")
            rc = fleet.supervise()
    finally:
        for s in old:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        fleet.stop(stop_timeout)
        shutil.rmtree(tmp, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)
    if rc == 0:
        _say("ember-fleet: stopped")
    return rc


def plan(nodes: list[NodeDescription], mode: str) -> dict[str, Any]:
    """What ember-fleet would start (for --dry-run and the launch-equivalence test)."""
    out = []
    for d in nodes:
        item = d.comparable()
        item["module"] = d.module
        if mode == "processes":
            item["argv"] = command_line(d, f"<params:{d.fqn}>")[1:]
        out.append(item)
    return {"mode": mode, "nodes": out}


def main(argv: list[str] | None = None) -> None:
    """Entry point of `ember-fleet`."""
    ap = argparse.ArgumentParser(prog="ember-fleet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="config/fleet.yaml", help="fleet file (default: config/fleet.yaml)")
    ap.add_argument("--bundle", help="model bundle directory (overrides the file's bundle)")
    ap.add_argument(
        "--mode", choices=MODES, default="composed",
        help="composed: every node in this process (default); processes: one child process per node, "
        "which fleet.yaml's respawn can restart",
    )
    ap.add_argument("--robots", help="comma-separated robot ids to start (default: all)")
    ap.add_argument("--no-cameras", action="store_true", help="do not start the replay cameras")
    ap.add_argument("--no-manager", action="store_true", help="do not start the fleet manager")
    ap.add_argument("--no-robots", action="store_true", help="start no incident nodes or cameras (the manager alone)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE:PARAM=VALUE",
        help="override one parameter of one node (fqn or robot id), YAML value; repeatable",
    )
    ap.add_argument("--dry-run", action="store_true", help="print the nodes as JSON and exit")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config, bundle=args.bundle)
        robots = [r for r in (args.robots or "").split(",") if r]
        nodes = apply_overrides(
            select(cfg, robots, not args.no_cameras, not args.no_manager, incident_nodes=not args.no_robots), args.set
        )
    except FleetConfigError as exc:
        print(f"ember-fleet: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.dry_run:
        print(json.dumps({**plan(nodes, args.mode), "environment": dds_environment(cfg)}, indent=2, sort_keys=True))
        sys.exit(0)
    if not any(d.executable != "ember-camera" for d in nodes):
        print("ember-fleet: nothing to start", file=sys.stderr)
        sys.exit(2)
    os.environ.update(dds_environment(cfg))  # before DDS starts here or in the children
    try:
        check_dds_environment()  # here, once: not a traceback in composed mode or one error per child
    except DDSEnvironmentError as exc:
        print(f"ember-fleet: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.mode == "composed":
        if any(d.respawn.enabled for d in nodes):
            _say(COMPOSED_RESPAWN_NOTE, err=True)
        rc = run_composed(nodes)
        from ember.ros.spinning import exit_now

        exit_now(rc)  # nodes destroyed, context shut down: no interpreter teardown of rclpy's C++ objects
    sys.exit(run_processes(nodes))


def apply_overrides(nodes: list[NodeDescription], sets: list[str]) -> list[NodeDescription]:
    """Apply `--set NODE:PARAM=VALUE` overrides (NODE: a node fqn, or a robot id for its incident node)."""
    out = list(nodes)
    for item in sets:
        target, _, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not target or not key or not eq:
            raise FleetConfigError(f"--set {item!r}: expected NODE:PARAM=VALUE")
        matches = [
            i for i, d in enumerate(out)
            if d.fqn == target or (d.executable == "incident_node" and d.namespace.strip("/") == target)
        ]
        if not matches:
            raise FleetConfigError(f"--set {item!r}: no node {target!r}")
        for i in matches:
            d = out[i]
            if key not in d.parameters:
                raise FleetConfigError(f"--set {item!r}: {d.fqn} has no parameter {key!r}")
            new = yaml.safe_load(value)
            old = d.parameters[key]
            if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
                new = float(new)
            if type(new) is not type(old):
                raise FleetConfigError(f"--set {item!r}: {key} expects {type(old).__name__}, got {new!r}")
            out[i] = dataclasses.replace(d, parameters={**d.parameters, key: new})
    return out


if __name__ == "__main__":
    main()
