"""`make demo`: the five-robot fleet of config/fleet.yaml on the replayed incident photos.

    python -m ember.demo --config config/fleet.yaml --bundle build/bundle

Starts `ember-fleet` (composed, one process; its log goes to build/demo/fleet.log), waits
for every robot's incident report, submits an operator task through SubmitTask, and prints
each robot's report, the fused robot selection and every assigned robot's action plan.
Then one assigned robot's battery drops under the fleet's threshold (its `battery`
parameter, set over the parameter service) and the demo prints the reassignment. It stops
the fleet and exits 0 within `--timeout` seconds (default 170), or exits 1 saying what
did not happen.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_TASK = "Respond to the incident: find the people at risk, help them and keep the area safe."


class DemoError(RuntimeError):
    """A step of the demo did not happen in time."""


def _bold(text: str) -> str:
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() else text


def _fmt_scores(pairs: list[tuple[str, float]], n: int = 5) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in pairs[:n])


class _FleetProcess:
    """ember-fleet as a child process, its output copied to a log file."""

    def __init__(self, config: str, bundle: str, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ember.ros.fleet", "--config", config, "--bundle", bundle, "--mode", "composed"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            if line.strip() == "READY":
                self.ready.set()

    def tail(self, n: int = 15) -> str:
        """The last lines of the fleet's log."""
        try:
            return "".join(self.log_path.read_text().splitlines(keepends=True)[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT, wait, (kill); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self._log.close()
        return int(self.proc.returncode)


class Demo:
    """Observer node + the steps of the demo."""

    def __init__(self, cfg: Any, deadline: float) -> None:
        import rclpy
        from ember_msgs.msg import ActionPlan, IncidentAnalysis, RobotSelection
        from ember_msgs.srv import SubmitTask
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String

        from ember.ros.qos import LATCHED_QOS, PLAN_QOS, REPORT_QOS

        self.cfg = cfg
        self.deadline = deadline
        self.node = rclpy.create_node("ember_demo")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.reports: dict[str, Any] = {}
        self.selections: dict[str, Any] = {}
        self.plans: list[Any] = []
        self.alerts: list[str] = []
        self.fused: list[Any] = []
        for r in cfg.robots:
            self.node.create_subscription(
                IncidentAnalysis, f"/{r.id}/ember/incident", lambda m: self.reports.setdefault(m.robot_id, m), REPORT_QOS
            )
            self.node.create_subscription(
                RobotSelection, f"/{r.id}/ember/robot_selection", self._on_selection, REPORT_QOS
            )
            self.node.create_subscription(ActionPlan, f"/{r.id}/ember/action_plan", self.plans.append, PLAN_QOS)
        self.node.create_subscription(String, "/fleet/alerts", lambda m: self.alerts.append(m.data), LATCHED_QOS)
        self.node.create_subscription(RobotSelection, "/fleet/fused_selection", self.fused.append, LATCHED_QOS)
        self.submit = self.node.create_client(SubmitTask, "/fleet/submit_task")
        self._set_params_type = SetParameters

    def _on_selection(self, msg: Any) -> None:
        rep = self.reports.get(msg.robot_id)
        if rep is not None and msg.robot_id not in self.selections and msg.header.stamp == rep.header.stamp:
            self.selections[msg.robot_id] = msg

    def spin_until(self, predicate: Any, timeout: float, what: str) -> None:
        """Spin until predicate() holds; DemoError after `timeout` s or at the demo's deadline."""
        end = min(time.monotonic() + timeout, self.deadline)
        while not predicate():
            if time.monotonic() > end:
                raise DemoError(f"timed out waiting for {what}")
            self.executor.spin_once(timeout_sec=0.1)

    def call(self, client: Any, request: Any, timeout: float, what: str) -> Any:
        """Call a service (waiting for it first)."""
        self.spin_until(client.service_is_ready, timeout, f"the service {client.srv_name}")
        future = client.call_async(request)
        self.spin_until(future.done, timeout, what)
        return future.result()

    def close(self) -> None:
        """Destroy the observer node."""
        self.executor.shutdown()
        self.node.destroy_node()


def print_report(robot: Any, rep: Any, sel: Any | None) -> None:
    """One robot's incident report, readably."""
    from ember.labels import ROBOT_TYPES

    labels = _fmt_scores(list(zip(rep.labels, rep.scores, strict=False)), 3)
    print(f"  {_bold(robot.id.ljust(13))}({robot.type}) sees {_bold(rep.incident_type)} at {rep.place or '?'}"
          f"  confidence {rep.confidence:.2f}, {rep.latency_ms:.0f} ms")
    print(f"      top labels: {labels}")
    if sel is not None:
        ranked = sorted(zip(ROBOT_TYPES, sel.scores, strict=True), key=lambda x: -x[1])
        print(f"      robot types: {_fmt_scores(ranked)}  -> selects {', '.join(sel.robot_types)}")


def print_plan(plan: Any) -> None:
    """One action plan, readably."""
    print(f"  {_bold(plan.robot_id)}: plan {plan.plan_id} ({plan.status}) for {plan.incident_id or 'no incident'}")
    for s in plan.steps:
        print(f"      {s.order}. {s.description}  [{s.robot_type} -> {s.robot_id}]")


def run(args: argparse.Namespace) -> int:
    """The demo; returns the exit code."""
    from ember.fleet_config import FleetConfigError, load

    bundle = Path(args.bundle)
    if not (bundle / "bundle.json").is_file():
        print(
            f"ember demo: no model bundle at {bundle} (bundle.json missing).\n"
            f"  Build it first with `make bundle` (or pass --bundle DIR).",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = load(args.config, bundle=str(bundle))
    except FleetConfigError as exc:
        print(f"ember demo: {exc}", file=sys.stderr)
        return 2
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", "42")
    os.environ["EMBER_REQUIRE_LOCAL_DDS"] = "1"

    t0 = time.monotonic()
    deadline = t0 + args.timeout
    robots = ", ".join(f"{r.id} ({r.type})" for r in cfg.robots)
    print(_bold(f"Ember demo: {len(cfg.robots)} robots: {robots}"))
    print(f"  model bundle {cfg.bundle}; cameras replay {cfg.cameras.images or cfg.cameras.video} "
          f"at {cfg.cameras.rate_hz:g} Hz; ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, discovery LOCALHOST")

    import rclpy
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue

    from ember.ros import runtime

    log_path = Path(args.log)
    print(f"\n{_bold('[1/5] starting the fleet')} (ember-fleet, composed; log: {log_path})")
    fleet = _FleetProcess(args.config, str(bundle), log_path)
    runtime.init()
    demo = Demo(cfg, deadline)
    ok = False
    try:
        while not fleet.ready.wait(0.2):
            if fleet.proc.poll() is not None:
                raise DemoError(f"ember-fleet exited with code {fleet.proc.returncode}:\n{fleet.tail()}")
            if time.monotonic() > deadline:
                raise DemoError("the fleet did not start in time")
        print(f"  fleet ready after {time.monotonic() - t0:.1f} s")

        print(f"\n{_bold('[2/5] incident reports')} (each robot's first analysis of its camera)")
        printed: set[str] = set()

        def all_reported() -> bool:
            for r in cfg.robots:
                if r.id in demo.reports and r.id not in printed and (r.id in demo.selections or time.monotonic() > t_sel):
                    printed.add(r.id)
                    print_report(r, demo.reports[r.id], demo.selections.get(r.id))
            return len(printed) == len(cfg.robots)

        t_sel = time.monotonic() + 90
        demo.spin_until(all_reported, 90, "an incident report from every robot")

        from ember_msgs.srv import SubmitTask

        print(f"\n{_bold('[3/5] operator task')}: {args.task!r} -> /fleet/submit_task")
        res = demo.call(demo.submit, SubmitTask.Request(task=args.task), 30, "the SubmitTask response")
        print(f"  {'accepted' if res.success else 'NOT planned'}: {res.message}")
        if not res.success:
            raise DemoError(f"the fleet manager could not plan the task: {res.message}")
        demo.spin_until(lambda: bool(demo.fused), 10, "the fused selection")
        fused = demo.fused[-1]
        from ember.labels import ROBOT_TYPES

        ranked = sorted(zip(ROBOT_TYPES, fused.scores, strict=True), key=lambda x: -x[1])
        print(f"  fused robot selection: {_bold(', '.join(fused.robot_types))}  (scores: {_fmt_scores(ranked)})")
        print(f"      {fused.reasoning}")

        print(f"\n{_bold('[4/5] action plans')}")
        wanted = set(res.plan_ids)
        demo.spin_until(lambda: wanted <= {p.plan_id for p in demo.plans}, 20, "the action plans")
        for p in demo.plans:
            if p.plan_id in wanted:
                print_plan(p)
        for a in demo.alerts:
            print(f"  ALERT {a}")

        if not args.no_failover:
            victim = sorted(wanted)[0].split("/")[-1]
            print(f"\n{_bold('[5/5] failover')}: {victim}'s battery drops to 10% "
                  f"(under the fleet's {cfg.manager.low_battery:.0%}: its steps must move)")
            seen = len(demo.plans)
            n_alerts = len(demo.alerts)
            req = demo._set_params_type.Request()
            req.parameters = [
                ParameterMsg(name="battery", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.1))
            ]
            client = demo.node.create_client(demo._set_params_type, f"/{victim}/incident_node/set_parameters")
            r = demo.call(client, req, 20, "the battery parameter change")
            if not r.results[0].successful:
                raise DemoError(f"setting {victim}'s battery failed: {r.results[0].reason}")

            def repaired() -> bool:
                new = demo.plans[seen:]
                cancelled = any(p.robot_id == victim and p.status == "cancelled" for p in new)
                return cancelled and (any(p.robot_id != victim for p in new) or len(demo.alerts) > n_alerts)

            demo.spin_until(repaired, 20, f"the reassignment of {victim}'s steps")
            for p in demo.plans[seen:]:
                print_plan(p)
            for a in demo.alerts[n_alerts:]:
                print(f"  ALERT (nothing lost: reported as unassignable) {a}")
        else:
            print(f"\n{_bold('[5/5] failover')}: skipped (--no-failover)")
        ok = True
    except DemoError as exc:
        print(f"\nember demo: {exc}", file=sys.stderr)
        print(f"--- last lines of {log_path} ---\n{fleet.tail()}", file=sys.stderr)
    finally:
        demo.close()
        runtime.shutdown()
        del rclpy
        print("\nstopping the fleet ...", flush=True)
        code = fleet.stop()
        print(f"fleet stopped (exit {code}) after {time.monotonic() - t0:.1f} s in all")
    return 0 if ok and code == 0 else 1


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m ember.demo`."""
    ap = argparse.ArgumentParser(prog="python -m ember.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="config/fleet.yaml", help="fleet file (default: config/fleet.yaml)")
    ap.add_argument("--bundle", default="build/bundle", help="model bundle (default: build/bundle, `make bundle`)")
    ap.add_argument("--task", default=DEFAULT_TASK, help="the operator's task")
    ap.add_argument("--timeout", type=float, default=170.0, help="seconds before the demo gives up")
    ap.add_argument("--log", default="build/demo/fleet.log", help="where the fleet's log goes")
    ap.add_argument("--no-failover", action="store_true", help="skip the low-battery reassignment")
    sys.exit(run(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
