"""`ember-task`: the operator's command line for the fleet manager (no `ros2` CLI needed).

    ember-task submit "Put out the fire" [--image FILE.jpg|png] [--timeout 30]
    ember-task done task-0001 [--timeout 30]
    ember-task watch [--robots drone_1,boat_1] [--count N]
    ember-task reload [--robots drone_1,boat_1] [--manager] [--timeout 60] [--listen 2]

`submit` calls /fleet/submit_task and prints `ok|failed: <message>`, `incident: <id>` and one
`plan: <id>` line per plan (exit 0 ok, 1 failed, 2 usage error or unreadable image, 3 no fleet
manager answered within --timeout). `done` publishes a task id on /fleet/task_done once the
manager subscribes (exit 0, 3 when none does within --timeout). `watch` prints every action plan
sent to a robot and every alert on /fleet/alerts, one line each, until Ctrl-C or --count lines
(exit 0), and the model versions in use when the manager's diagnostics name them. `reload` asks
robots (`/<id>/ember/reload_model`) and the fleet manager (`/fleet/reload_model`) to load the bundle
now swapped in at their bundle path and prints one line per answer (exit 0 all loaded, 1 any refused
or silent, 3 none answered). ROS arguments (`--ros-args ...`) are honoured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from ember_msgs.msg import ActionPlan, RobotStatus
from ember_msgs.srv import SubmitTask
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ember.fleet_config import ROBOT_ID_RE
from ember.ros import runtime
from ember.ros.conversions import numpy_to_image
from ember.ros.qos import DIAGNOSTICS_QOS, LATCHED_QOS, PLAN_QOS, STATUS_QOS, TASK_QOS
from ember.ros.spinning import stopped_by_signal
from ember.serve.images import ImageError, decode_image

PROG = "ember-task"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_FLEET = 0, 1, 2, 3
SUBMIT_SERVICE = "/fleet/submit_task"
DONE_TOPIC = "/fleet/task_done"
ALERTS_TOPIC = "/fleet/alerts"
STATUS_TOPIC = "/fleet/status"
MANAGER_DIAGNOSTICS = "ember/fleet_manager"
ROBOT_RELOAD_SERVICE = "ember/reload_model"
MANAGER_RELOAD_SERVICE = "/fleet/reload_model"
MANAGER_NAME = "fleet_manager"
MAX_IMAGE_SIDE = 1280
"""`submit --image` sends at most this many pixels on the longer side"""


class UsageError(Exception):
    """A bad argument or input file: one line on stderr, exit 2."""


# --- formatting (pure) ---


def format_response(res: SubmitTask.Response) -> list[str]:
    """The lines `submit` prints for a SubmitTask response."""
    lines = [f"{'ok' if res.success else 'failed'}: {res.message}", f"incident: {res.incident_id}"]
    return lines + [f"plan: {pid}" for pid in res.plan_ids]


def format_plan(plan: ActionPlan) -> str:
    """One line for an ActionPlan: id, status, incident and its numbered steps."""
    steps = "; ".join(f"{s.order}. {s.description}" + (f" [{s.robot_type}]" if s.robot_type else "") for s in plan.steps)
    return f"plan {plan.plan_id} ({plan.status}) incident {plan.incident_id or '-'}: {steps or '(no steps)'}"


def format_alert(data: str) -> str:
    """One line for a /fleet/alerts message (JSON from the manager; other text as it is)."""
    try:
        alert = json.loads(data)
    except json.JSONDecodeError:
        return f"ALERT {data}"
    if not isinstance(alert, dict):
        return f"ALERT {data}"
    # what it is about: the task (its id, else its text) or, for a robot's alert (clock_skew), the robot
    about = alert.get("task_id") or (json.dumps(alert["task"]) if alert.get("task") else alert.get("robot_id", '""'))
    parts = [f"ALERT {alert.get('kind', '?')} {about}"]
    if alert.get("step_id"):
        parts.append(f"step {alert['step_id']} ({alert.get('robot_type', '')}): {alert.get('description', '')}")
    if alert.get("reason"):
        parts.append(f"- {alert['reason']}")
    return " ".join(parts)


def format_models(versions: str) -> str:
    """The line `watch` prints for the fleet manager's `model_versions` diagnostics value ('' for none)."""
    return f"models: {versions}" if versions else ""


def load_image(path: str, max_side: int = MAX_IMAGE_SIDE) -> Image:
    """A JPEG/PNG file as a sensor_msgs/Image (rgb8), its longer side cut to `max_side` (a 12 MP
    photo is 36 MB raw; the model sees a few hundred pixels); UsageError if it cannot be read."""
    try:
        rgb = decode_image(Path(path).read_bytes())
    except (OSError, ImageError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read image {path}: {reason}") from None
    scale = max_side / max(rgb.shape[:2])
    if scale < 1.0:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return numpy_to_image(rgb, "rgb8")


# --- the node ---


class OperatorNode(Node):
    """The operator's node: a SubmitTask client, a task-done publisher, plan and alert watchers."""

    def __init__(self, node_name: str = "ember_task", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.executor_ = SingleThreadedExecutor(context=self.context)
        self.executor_.add_node(self)

    def spin_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Spin until `predicate()` holds or `timeout` s pass (None: no limit); the predicate."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            if deadline is not None and time.monotonic() >= deadline:
                return predicate()
            self.executor_.spin_once(timeout_sec=0.05)
        return True

    def submit(self, task: str, image: Image | None, timeout: float, service: str) -> int:
        """Call SubmitTask, print the response; the exit code."""
        client = self.create_client(SubmitTask, service)
        if not self.spin_until(client.service_is_ready, timeout):
            return _no_fleet(f"no fleet manager offers {service} after {timeout:g} s")
        request = SubmitTask.Request(task=task, has_image=image is not None)
        if image is not None:
            request.image = image
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout):
            return _no_fleet(f"the fleet manager did not answer on {service} within {timeout:g} s")
        response = future.result()
        print("\n".join(format_response(response)), flush=True)
        return EXIT_OK if response.success else EXIT_FAILED

    def done(self, task_id: str, timeout: float, topic: str) -> int:
        """Publish `task_id` on the task-done topic once the manager subscribes; the exit code."""
        pub = self.create_publisher(String, topic, TASK_QOS)
        t0 = time.monotonic()
        if not self.spin_until(lambda: pub.get_subscription_count() > 0, timeout):
            return _no_fleet(f"no fleet manager subscribes to {topic} after {timeout:g} s")
        pub.publish(String(data=task_id))
        left = max(0.1, timeout - (time.monotonic() - t0))
        if hasattr(pub, "wait_for_all_acked") and not pub.wait_for_all_acked(Duration(seconds=left)):
            return _no_fleet(f"the fleet manager did not acknowledge {task_id} on {topic} within {timeout:g} s")
        print(f"done: {task_id} sent on {topic}", flush=True)
        return EXIT_OK

    def watch(self, robots: list[str], count: int) -> int:
        """Print plans and alerts until `count` lines (0: until Ctrl-C); exit 0."""
        watcher = _Watcher(self, count)
        self.create_subscription(String, ALERTS_TOPIC, lambda m: watcher.emit(format_alert(m.data)), LATCHED_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", watcher.on_diagnostics, DIAGNOSTICS_QOS)
        for rid in robots:
            watcher.follow(rid)
        if not robots:
            self.create_subscription(RobotStatus, STATUS_TOPIC, lambda m: watcher.follow(m.robot_id), STATUS_QOS)
        self.spin_until(watcher.finished, None)
        return EXIT_OK

    def heard_robots(self, listen: float, timeout: float) -> list[str]:
        """The robot ids of the /fleet/status heartbeats that arrive within `listen` s once a heartbeat
        publisher matched (waited for up to `timeout` s), sorted."""
        heard: set[str] = set()
        sub = self.create_subscription(RobotStatus, STATUS_TOPIC, lambda m: heard.add(m.robot_id), STATUS_QOS)
        if self.spin_until(lambda: sub.get_publisher_count() > 0, timeout):
            self.spin_until(lambda: False, listen)
        self.destroy_subscription(sub)
        return sorted(r for r in heard if ROBOT_ID_RE.match(r))

    def reload(self, targets: dict[str, str], timeout: float) -> int:
        """Call the Trigger service of each target (name -> service) once it is offered (within `timeout`
        s), give each call `timeout` s to answer, then print one line per target in order; the exit code."""
        clients = {name: self.create_client(Trigger, service) for name, service in targets.items()}
        calls: dict[str, tuple[Any, float]] = {}  # name -> (future, deadline of its answer)
        start = time.monotonic()

        def settled() -> bool:
            now = time.monotonic()
            for name, client in clients.items():
                if name not in calls and now < start + timeout and client.service_is_ready():
                    calls[name] = (client.call_async(Trigger.Request()), now + timeout)
            waiting_to_appear = now < start + timeout and len(calls) < len(clients)
            return not waiting_to_appear and all(f.done() or now >= end for f, end in calls.values())

        self.spin_until(settled, None)
        answered, ok = 0, True
        for name, service in targets.items():
            future = calls[name][0] if name in calls else None
            res = future.result() if future is not None and future.done() else None
            if res is None:
                ok = False
                why = f"no {service} service" if future is None else f"{service} did not answer"
                print(f"{name}: no answer: {why} within {timeout:g} s", flush=True)
                continue
            answered += 1
            ok = ok and res.success
            print(f"{name}: {'ok' if res.success else 'failed'}: {res.message}", flush=True)
        if not answered:
            return _no_fleet("nothing answered a reload_model call")
        return EXIT_OK if ok else EXIT_FAILED


class _Watcher:
    """The plan subscriptions of `watch` (one per robot id) and the line count."""

    def __init__(self, node: OperatorNode, count: int) -> None:
        self.node, self.count, self.printed = node, count, 0
        self.robots: set[str] = set()
        self.models = ""

    def follow(self, robot_id: str) -> None:
        """Subscribe to the plans of `robot_id` (once; ids unusable in a topic name are skipped)."""
        if robot_id in self.robots or not ROBOT_ID_RE.match(robot_id):
            return
        self.robots.add(robot_id)
        self.node.create_subscription(ActionPlan, f"/{robot_id}/ember/action_plan", lambda m: self.emit(format_plan(m)), PLAN_QOS)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        """Print the fleet manager's model versions in use when they change (a rollout under way)."""
        for status in msg.status:
            if status.name != MANAGER_DIAGNOSTICS:
                continue
            versions = next((kv.value for kv in status.values if kv.key == "model_versions"), "")
            if versions and versions != self.models:
                self.models = versions
                self.emit(format_models(versions))

    def emit(self, line: str) -> None:
        if self.finished():
            return
        print(line, flush=True)
        self.printed += 1

    def finished(self) -> bool:
        return bool(self.count) and self.printed >= self.count


def _no_fleet(what: str) -> int:
    print(f"{PROG}: {what}: check that the fleet manager runs and that ROS_DOMAIN_ID matches its own", file=sys.stderr, flush=True)
    return EXIT_NO_FLEET


# --- command line ---


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit an operator task to the fleet manager")
    s.add_argument("task", help="the task text")
    s.add_argument("--image", help="a JPEG or PNG the task is about")
    s.add_argument("--timeout", type=_positive, default=30.0, help="seconds to wait for the manager (default 30)")
    s.add_argument("--service", default=SUBMIT_SERVICE, help=f"SubmitTask service (default {SUBMIT_SERVICE})")
    d = sub.add_parser("done", help="close a task (done or withdrawn)")
    d.add_argument("task_id", help="the task id, e.g. task-0001")
    d.add_argument("--timeout", type=_positive, default=30.0, help="seconds to wait for the manager (default 30)")
    d.add_argument("--topic", default=DONE_TOPIC, help=f"task-done topic (default {DONE_TOPIC})")
    w = sub.add_parser("watch", help="print action plans and alerts")
    w.add_argument("--robots", help="comma-separated robot ids (default: every robot that heartbeats)")
    w.add_argument("--count", type=int, default=0, help="stop after this many lines (default: until Ctrl-C)")
    r = sub.add_parser("reload", help="load the bundle now at the robots' and the manager's bundle path")
    r.add_argument("--robots", help="comma-separated robot ids (default: every robot that heartbeats within --listen)")
    r.add_argument("--manager", action="store_true",
                   help="the fleet manager's text robot selector (alone, unless --robots is given too)")
    r.add_argument("--timeout", type=_positive, default=60.0,
                   help="seconds for the services to appear and answer (default 60: a reload loads and checks a model)")
    r.add_argument("--listen", type=_positive, default=2.0,
                   help="without --robots: seconds to collect /fleet/status heartbeats once a robot's publisher "
                        "matched (default 2)")
    r.add_argument("--service", default=ROBOT_RELOAD_SERVICE,
                   help=f"the robots' reload service, under /<robot_id>/ (default {ROBOT_RELOAD_SERVICE})")
    r.add_argument("--manager-service", default=MANAGER_RELOAD_SERVICE,
                   help=f"the fleet manager's reload service (default {MANAGER_RELOAD_SERVICE})")
    return ap.parse_args(argv)


def _check(args: argparse.Namespace) -> tuple[Image | None, list[str]]:
    """Validate arguments beyond argparse; the image to send and the robots to watch."""
    if args.command == "submit" and not args.task.strip():
        raise UsageError("the task text is empty")
    if args.command == "done" and not args.task_id.strip():
        raise UsageError("the task id is empty")
    if args.command == "watch" and args.count < 0:
        raise UsageError(f"--count must be >= 0, not {args.count}")
    robots = [r.strip() for r in (getattr(args, "robots", None) or "").split(",") if r.strip()]
    bad = [r for r in robots if not ROBOT_ID_RE.match(r)]
    if bad:
        raise UsageError(f"invalid robot id(s): {', '.join(bad)}")
    image = load_image(args.image) if getattr(args, "image", None) else None
    return image, robots


def _run(node: OperatorNode, args: argparse.Namespace, image: Image | None, robots: list[str]) -> int:
    if args.command == "submit":
        return node.submit(args.task.strip(), image, args.timeout, args.service)
    if args.command == "done":
        return node.done(args.task_id.strip(), args.timeout, args.topic)
    if args.command == "reload":
        return node.reload(_reload_targets(node, args, robots), args.timeout)
    return node.watch(robots, args.count)


def _reload_targets(node: OperatorNode, args: argparse.Namespace, robots: list[str]) -> dict[str, str]:
    """Name -> reload service of what `reload` calls: the --robots (none with --manager alone, else the
    robots heard within --listen), then the fleet manager (unless only --robots were given)."""
    if not robots and not args.manager:
        robots = node.heard_robots(args.listen, args.timeout)
        if not robots:
            print(f"{PROG}: no robot heartbeat on {STATUS_TOPIC} within {args.timeout:g} s", file=sys.stderr, flush=True)
    service = args.service.strip("/")
    targets = {rid: f"/{rid}/{service}" for rid in robots}
    if args.manager or not args.robots:
        targets[MANAGER_NAME] = args.manager_service
    return targets


def main(argv: list[str] | None = None) -> None:
    """Run one subcommand and exit with its code (Ctrl-C: 0 for watch, else 130)."""
    argv = list(sys.argv if argv is None else argv)
    args = _parse(remove_ros_args(argv)[1:])
    try:
        image, robots = _check(args)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)
    runtime.init(args=argv)
    node = OperatorNode()
    code = EXIT_OK
    try:
        code = _run(node, args, image, robots)
    except (KeyboardInterrupt, Exception) as exc:
        if not stopped_by_signal(exc, node.context):
            raise
        code = EXIT_OK if args.command == "watch" else 130
    finally:
        node.executor_.shutdown()
        node.destroy_node()
        runtime.shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
