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
processes mode a child that dies after READY is reported and the rest keep running (a crashed
robot is the fleet manager's business); when all children are gone, ember-fleet exits 1. If
ember-fleet itself is killed (`kill -9`, the OOM killer), the kernel sends every child SIGTERM
(EMBER_STOP_WITH_PARENT, see ember.ros.runtime): no node runs on orphaned.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from ember.fleet_config import FleetConfig, FleetConfigError, NodeDescription, dds_environment, load
from ember.ros.runtime import STOP_WITH_PARENT_ENV, DDSEnvironmentError, check_dds_environment

MODES = ("composed", "processes")


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
    """A closed terminal (SIGHUP) stops the composed fleet as SIGTERM does, cleanly: rclpy only
    handles SIGINT/SIGTERM. SIGHUP is blocked here, before rclpy, numpy or onnxruntime start
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
    """All nodes in this process, one executor; returns the exit code."""
    _sighup_stops_like_sigterm()  # first: before the imports below start threads
    import rclpy

    from ember.ros import runtime
    from ember.ros.spinning import print_ready, spin_nodes, stopped_by_signal

    runtime.init()
    created = []
    try:
        for d in nodes:
            created.append(node_class(d.executable)(**composed_kwargs(d)))
            print(f"STARTED {d.fqn} pid={os.getpid()}", flush=True)
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - report which node failed and stop the others
        # SIGINT/SIGTERM while the nodes are being built: rclpy's handlers shut the context down
        # (the next node then cannot be created) or Python raises KeyboardInterrupt. A stop, not a failure.
        stopped = stopped_by_signal(exc, rclpy.get_default_context())
        if not stopped:
            print(f"ember-fleet: cannot start {d.fqn}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        for n in created:
            n.destroy_node()
        runtime.shutdown()
        if stopped:
            print("ember-fleet: stopped", flush=True)
            return 0
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


def run_processes(nodes: list[NodeDescription], stop_timeout: float = 15.0) -> int:
    """One child process per node; returns the exit code.

    READY is printed once every child has printed its own READY (its node exists and its
    signal handlers are installed). A child that exits before that is a node that cannot
    start: the others are stopped and the exit code is 1, as in composed mode.
    """
    tmp = Path(tempfile.mkdtemp(prefix="ember-fleet-"))
    children: dict[str, subprocess.Popen] = {}
    ready: dict[str, threading.Event] = {}
    readers: dict[str, threading.Thread] = {}
    out_lock = threading.Lock()
    stopping = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["signal"] = signum  # the loops below notice it; never raised into Popen mid-start

    def exited_before_ready(fqn: str) -> bool:
        if ready[fqn].is_set() or children[fqn].poll() is None:
            return False
        readers[fqn].join(timeout=5)  # a READY printed just before exiting still counts
        return not ready[fqn].is_set()

    old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    child_env = {**os.environ, STOP_WITH_PARENT_ENV: str(os.getpid())}  # a kill -9 here still stops them
    rc = 0
    try:
        for i, d in enumerate(nodes):
            if stopping["signal"]:
                break
            pf = d.write_params_file(tmp, i)
            # own process group: a terminal's Ctrl-C reaches ember-fleet, which stops the children in order
            proc = subprocess.Popen(
                command_line(d, str(pf)), start_new_session=True, stdout=subprocess.PIPE, text=True, bufsize=1,
                env=child_env,
            )
            children[d.fqn], ready[d.fqn] = proc, threading.Event()
            readers[d.fqn] = threading.Thread(target=_pass_on_output, args=(proc, ready[d.fqn], out_lock), daemon=True)
            readers[d.fqn].start()
            _say(f"STARTED {d.fqn} pid={proc.pid}")
        failed = None
        while not stopping["signal"] and failed is None and not all(e.is_set() for e in ready.values()):
            failed = next((fqn for fqn in children if exited_before_ready(fqn)), None)
            time.sleep(0.1)
        if failed is not None:
            code = children[failed].returncode
            _say(f"ember-fleet: cannot start {failed}: it exited with code {code} (see its output above)", err=True)
            rc = 1
        elif not stopping["signal"]:
            _say("READY")
            alive = dict(children)
            while alive and not stopping["signal"]:
                for fqn, proc in list(alive.items()):
                    code = proc.poll()
                    if code is not None:
                        _say(f"ember-fleet: {fqn} exited with code {code}", err=True)
                        del alive[fqn]
                time.sleep(0.2)
            rc = 0 if stopping["signal"] else 1
    finally:
        for s in old:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + stop_timeout
        for fqn, proc in children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(f"ember-fleet: {fqn} did not stop in {stop_timeout:g}s; killing it", err=True)
                proc.kill()
                proc.wait()
        for t in readers.values():
            t.join(timeout=5)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
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
    ap.add_argument("--mode", choices=MODES, default="composed")
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
    sys.exit(run_composed(nodes) if args.mode == "composed" else run_processes(nodes))


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
