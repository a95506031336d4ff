"""The fleet manager: fleet state, report fusion, task allocation by bids, reassignment.

`ros2 run ember fleet_manager --ros-args --params-file fleet_manager.yaml`, or started by
`ember-fleet` / fleet.launch.py from config/fleet.yaml.

* /fleet/status (RobotStatus): a robot is online while its heartbeats arrive; after
  `heartbeat_timeout_s` without one it is offline and its unfinished steps move.
* /<robot_id>/ember/incident + ember/robot_selection: fused into incidents (same label,
  source stamps within `fusion_window_s`), see ember.ros.fusion. Robots' clocks need not agree:
  each robot's offset from the manager's clock is estimated from its heartbeats' stamps and its
  report stamps are matched on the manager's clock; a robot further off than `clock_skew_warn_s`
  gets a warning and a clock_skew alert.
* Tasks: /fleet/tasks (std_msgs/String, the task text) and the SubmitTask service
  (/fleet/submit_task; with an image, the least loaded live robot analyses it first
  through its AnalyzeImage service). Required robot types come from the task's text when the
  `bundle` parameter names a model bundle with a text robot selector that knows words of the
  task (the robots' own rule, ember.engine.EmberEngine.select_robots), else from the fused
  camera-report selection scores; concrete robots win steps by bids (ember.ros.allocation).
  A task is about the incident a robot saw in its image, else the one it names, else the one
  most robots reported recently, else none. A task the text selector decides is planned at
  once, with or without an incident, and its steps are its own text (unless a robot analysed
  its image: that robot's plan was written for it). Any other task waits up to `task_wait_s`
  for an incident with a robot selection.
* /fleet/task_done (std_msgs/String, a task id): the operator closes a task (done or
  withdrawn); its robots get cancellations and its steps stop counting as their load.
* Out: one ActionPlan per assigned robot on /<robot_id>/ember/action_plan (reliable,
  transient-local; new, updated, cancelled), the fused selection on /fleet/fused_selection
  (RobotSelection, robot_id "fleet_manager"), JSON alerts on /fleet/alerts for steps that no
  live robot can take (and failed tasks, robots' clocks far off), and /diagnostics.

Steps are unfinished until their task is closed on /fleet/task_done (robots report no
per-step progress).
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from ember_msgs.msg import ActionPlan, ActionStep, IncidentAnalysis, RobotSelection, RobotStatus
from ember_msgs.srv import AnalyzeImage, SubmitTask
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ember.fleet_config import ROBOT_ID_RE, CostWeights, FleetConfigError, ManagerConfig, check_manager
from ember.labels import ROBOT_TYPES
from ember.ros import runtime
from ember.ros.allocation import STATUS_CANCELLED, STATUS_UPDATED, Allocator, Changes, Policy
from ember.ros.fusion import ClockOffset, Incident, IncidentFuser, Report, required_types, skew_change
from ember.ros.planning import build_steps
from ember.ros.qos import DIAGNOSTICS_QOS, LATCHED_QOS, PLAN_QOS, REPORT_QOS, STATUS_QOS, TASK_QOS
from ember.ros.spinning import run_node, stopped_by_signal

MANAGER_ID = "fleet_manager"
TEXT_BASIS = "text selector"
MAX_STALE_PLANS = 100
"""stale plan ids remembered per robot (each is cancelled once)"""
ZERO_STAMP_PAIR_S = 1.0
"""a reporter that leaves stamps zero: its analysis and selection arriving within this are one image's"""
MAX_WARNINGS = 1000
"""warn-once keys remembered, the least recently hit forgotten first: a key that keeps coming
(a broken robot's heartbeats) stays remembered however many one-off keys (unknown task ids) pass"""
MODEL_VERSION_NAMES = 5
"""robot ids listed per model version in diagnostics (the rest are counted)"""


@dataclass(frozen=True)
class Selection:
    """The robot types a task needs: per-type scores (ROBOT_TYPES order), the chosen types
    (best first) and what decided them ("text selector" or "camera reports")."""

    scores: list[float]
    types: list[str]
    basis: str


@dataclass(frozen=True)
class Decision:
    """How a task is planned: the incident it belongs to (None: none), its selection, and whether
    its steps come from that incident (the model's plan, templates) or from the task's text."""

    incident: Incident | None
    selection: Selection
    steps_from_incident: bool


@dataclass
class RobotRecord:
    """All the manager keeps about one robot besides its allocator state: forgetting the robot
    drops the record whole, endpoints destroyed."""

    report_subs: list[Any]
    """its IncidentAnalysis and RobotSelection subscriptions"""
    plan_pub: Any
    last_seen: float | None = None
    """time.monotonic() of its last heartbeat; None: never heard (an expected robot)"""
    analyze_client: Any = None
    """its AnalyzeImage client, made on the first SubmitTask with an image it analyses"""
    analyzing: int = 0
    """SubmitTask calls using analyze_client now (it is not destroyed then)"""
    stale_cancelled: set[str] = field(default_factory=set)
    """plan ids cancelled because its heartbeats named them (each cancelled once)"""
    last_plan_sent: float = -math.inf
    """time.monotonic() of the last plan message sent to it"""
    resent: set[str] = field(default_factory=set)
    """plan ids sent again since its heartbeat last named a plan (each once)"""
    zero_stamp: float = -math.inf
    """the arrival stamp given to its last report with a zero stamp, and the report kinds that used it"""
    zero_stamp_kinds: set[str] = field(default_factory=set)
    clock: ClockOffset = field(default_factory=ClockOffset)
    """its clock's offset from the manager's, estimated from its heartbeats' stamps"""
    skew_alerted: float | None = None
    """the offset its clock_skew alert gave (None: no alert, or its clock came back within the limit)"""
    model_version: str = ""
    """the model_version of its latest IncidentAnalysis ('' before one, or when it names none)"""


def _stamp_seconds(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def _unit(x: float) -> bool:
    """A probability: finite and within 0..1."""
    return math.isfinite(x) and 0.0 <= x <= 1.0


def model_versions_text(versions: dict[str, str]) -> str:
    """The model versions in use, each with the robots (or the text selector) running it, e.g.
    `v1 (drone_1, legged_1); v2 (humanoid_1)`; at most MODEL_VERSION_NAMES names per version, the
    rest counted (`and 495 more`); '' versions (reports that name none) are left out."""
    by_version: dict[str, list[str]] = {}
    for name, version in versions.items():
        if version:
            by_version.setdefault(version, []).append(name)
    parts = []
    for version, names in sorted(by_version.items()):
        names.sort()
        shown = ", ".join(names[:MODEL_VERSION_NAMES])
        more = len(names) - MODEL_VERSION_NAMES
        parts.append(f"{version} ({shown}{f' and {more} more' if more > 0 else ''})")
    return "; ".join(parts)


def status_problem(msg: RobotStatus) -> str:
    """Why a heartbeat cannot be used ('' when it can): the manager addresses plans to
    /<robot_id>/..., so the id must be a valid ROS name token."""
    if not ROBOT_ID_RE.match(msg.robot_id):
        return f"invalid robot id {msg.robot_id!r} (letters, digits, underscores; starting with a letter)"
    if msg.robot_type not in ROBOT_TYPES:
        return f"unknown robot type {msg.robot_type!r}"
    if not math.isfinite(msg.battery):
        return f"battery {msg.battery}"
    return ""


def report_problem(msg: IncidentAnalysis | RobotSelection) -> str:
    """Why a report cannot be fused ('' when it can): confidence and robot-type scores must be
    probabilities, or one broken model poisons every reporter's fused scores."""
    if not _unit(msg.confidence):
        return f"confidence {msg.confidence}"
    if isinstance(msg, RobotSelection) and not all(_unit(float(s)) for s in msg.scores):
        return f"robot-type scores {[float(s) for s in msg.scores]}"
    return ""


class FleetManager(Node):
    """Keeps the fleet's state and turns operator tasks into per-robot action plans."""

    def __init__(self, node_name: str = "fleet_manager", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)

        def p(name: str, value: Any, descriptor: ParameterDescriptor | None = None) -> Parameter:
            """Every parameter is read once, here: read-only, so `ros2 param set` is refused, not ignored."""
            descriptor = descriptor or ParameterDescriptor()
            descriptor.read_only = True
            return self.declare_parameter(name, value, descriptor)

        d = ManagerConfig()  # the defaults of fleet.yaml's manager section
        settings = ManagerConfig(
            heartbeat_timeout_s=float(p("heartbeat_timeout_s", d.heartbeat_timeout_s).value),
            fusion_window_s=float(p("fusion_window_s", d.fusion_window_s).value),
            low_battery=float(p("low_battery", d.low_battery).value),
            battery_hysteresis=float(p("battery_hysteresis", d.battery_hysteresis).value),
            selection_threshold=float(p("selection_threshold", d.selection_threshold).value),
            max_robot_types=int(p("max_robot_types", d.max_robot_types).value),
            task_wait_s=float(p("task_wait_s", d.task_wait_s).value),
            forget_after_s=float(p("forget_after_s", d.forget_after_s, ParameterDescriptor(
                description="a robot not in robot_ids that is offline this long is forgotten (0 = never)")).value),
            share_window_s=float(p("share_window_s", d.share_window_s, ParameterDescriptor(
                description="steps the first robot back took from pending this recently are shared with "
                            "robots back soon after (s, 0 = never)")).value),
            bundle_check_period_s=float(p("bundle_check_period_s", d.bundle_check_period_s, ParameterDescriptor(
                description="how often a replaced bundle is looked for (stat only; 0 = off)")).value),
            clock_skew_warn_s=float(p("clock_skew_warn_s", d.clock_skew_warn_s, ParameterDescriptor(
                description="alert when a robot's clock is further than this off the manager's (s)")).value),
            weights=CostWeights(
                suitability=float(p("weight_suitability", d.weights.suitability).value),
                type_mismatch=float(p("weight_type_mismatch", d.weights.type_mismatch).value),
                battery=float(p("weight_battery", d.weights.battery).value),
                load=float(p("weight_load", d.weights.load).value),
            ),
        )
        check_manager(settings, f"{self.get_name()} parameters")  # `ros2 run` skips fleet.yaml's checks
        self._timeout = settings.heartbeat_timeout_s
        self._threshold = settings.selection_threshold
        self._max_types = settings.max_robot_types
        self._task_wait = settings.task_wait_s
        self._forget_after = settings.forget_after_s
        self._skew_warn = settings.clock_skew_warn_s
        policy = Policy(low_battery=settings.low_battery, battery_hysteresis=settings.battery_hysteresis,
                        selection_threshold=self._threshold, weights=settings.weights,
                        share_window_s=settings.share_window_s)
        expected = p("robot_ids", Parameter.Type.STRING_ARRAY, ParameterDescriptor(description="robots to expect")).value
        status_topic = p("status_topic", "/fleet/status").value
        tasks_topic = p("tasks_topic", "/fleet/tasks").value
        done_topic = p("task_done_topic", "/fleet/task_done").value
        alerts_topic = p("alerts_topic", "/fleet/alerts").value
        fused_topic = p("fused_selection_topic", "/fleet/fused_selection").value
        submit_service = p("submit_service", "/fleet/submit_task").value
        self._incident_topic = p("incident_topic", "ember/incident").value
        self._selection_topic = p("selection_topic", "ember/robot_selection").value
        self._plan_topic = p("plan_topic", "ember/action_plan").value
        self._analyze_service = p("analyze_service", "ember/analyze_image").value
        self._analyze_timeout = float(p("analyze_timeout_s", 30.0).value)
        check_period = float(p("check_period_s", 0.25).value)
        diag_period = float(p("diagnostics_period_s", 1.0).value)
        for name, value in (("analyze_timeout_s", self._analyze_timeout), ("check_period_s", check_period),
                            ("diagnostics_period_s", diag_period)):
            if not (math.isfinite(value) and value > 0):
                raise FleetConfigError(f"{self.get_name()} parameters.{name}: must be > 0, got {value}")
        bundle = str(p("bundle", "", ParameterDescriptor(description="model bundle whose text robot selector "
                                                                      "decides text tasks ('' = none)")).value)
        bundle_check = settings.bundle_check_period_s
        reload_service = p("reload_service", "/fleet/reload_model").value
        self._selector_slot, self._text_selector_state = self._load_text_selector(bundle)
        self._lock = threading.RLock()
        self._reports_arrived = threading.Condition(self._lock)
        self._waiting_tasks: list[tuple[str, float]] = []
        self._alloc = Allocator(policy)
        self._fuser = IncidentFuser(settings.fusion_window_s)
        self._expected: list[str] = list(expected or [])
        self._robots: dict[str, RobotRecord] = {}
        self._tasks: dict[str, dict[str, Any]] = {}
        self._task_count = 0
        self._counts = {"status_msgs": 0, "reports": 0, "plans_sent": 0, "alerts": 0, "tasks": 0, "tasks_failed": 0,
                        "tasks_text_selected": 0, "tasks_without_incident": 0, "reports_rejected": 0,
                        "tasks_finished": 0, "robots_forgotten": 0, "plans_resent": 0}
        self._alloc_ms: deque[float] = deque(maxlen=200)
        self._warned: OrderedDict[str, None] = OrderedDict()

        self._pub_alerts = self.create_publisher(String, alerts_topic, LATCHED_QOS)
        self._pub_fused = self.create_publisher(RobotSelection, fused_topic, LATCHED_QOS)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.create_subscription(RobotStatus, status_topic, self._on_status, STATUS_QOS)
        self.create_subscription(String, tasks_topic, self._on_task_topic, TASK_QOS)
        self.create_subscription(String, done_topic, self._on_task_done, TASK_QOS)
        # SubmitTask may wait (for a first report, for a robot's AnalyzeImage): it lives on a
        # helper node with its own small executor thread, so this node's callbacks never block
        # and this node can be spun by a single-threaded executor.
        self._task_node = rclpy.create_node(
            f"{self.get_name()}_tasks", namespace=self.get_namespace(), context=self.context, use_global_arguments=False
        )
        self._io_group = ReentrantCallbackGroup()
        self._task_node.create_service(SubmitTask, submit_service, self._on_submit, callback_group=self._io_group)
        reload_group = MutuallyExclusiveCallbackGroup()  # a selector load (hashing the bundle) never blocks this node
        self._task_node.create_service(Trigger, reload_service, self._on_reload, callback_group=reload_group)
        if bundle and bundle_check > 0:
            self._task_node.create_timer(bundle_check, self._check_bundle, callback_group=reload_group,
                                         clock=runtime.steady_clock())
        self._task_executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self._task_executor.add_node(self._task_node)
        self._closing = threading.Event()
        self._task_thread = threading.Thread(target=self._spin_tasks, name="fleet-manager-tasks", daemon=True)
        self._task_thread.start()
        timers = MutuallyExclusiveCallbackGroup()
        steady = runtime.steady_clock()  # heartbeats come in wall time, also while a simulation is paused
        self.create_timer(check_period, self._check_liveness, callback_group=timers, clock=steady)
        self.create_timer(diag_period, self._publish_diagnostics, callback_group=timers, clock=steady)
        for rid in self._expected:
            self._record(rid)
        self.get_logger().info(
            f"fleet manager up: expecting {len(self._expected)} robots, heartbeat timeout {self._timeout:g}s, "
            f"fusion window {settings.fusion_window_s:g}s, low battery {policy.low_battery:g}, text robot selector: "
            f"{self._text_selector_state}"
        )

    def _load_text_selector(self, bundle: str) -> tuple[Any, str]:
        """(BundleSlot of the selector or None, state for logs and diagnostics). A bundle that cannot be
        read is logged as an error and the manager runs on the camera reports alone (until a good
        bundle is swapped in: the slot loads it then)."""
        if not bundle:
            return None, "off (no bundle parameter)"
        from ember.engine.reload import BundleSlot
        from ember.engine.robot_selector import load_text_selector

        slot = BundleSlot(bundle, lambda path: load_text_selector(path, list(ROBOT_TYPES)))
        outcome = slot.reload()
        if not outcome.ok:
            self.get_logger().error(f"text robot selector unavailable, tasks use the camera reports: {slot.error}")
        return slot, self._selector_state(slot)

    @staticmethod
    def _selector_state(slot: Any) -> str:
        """The text_selector state of diagnostics: on / none in the bundle / error (WARN)."""
        if slot.error:
            kept = f"; still using the selector of model {slot.version}" if slot.loaded and slot.value else ""
            return f"error: {slot.error}{kept}"
        if slot.value is None:
            return f"none in {slot.path}"
        return f"on ({slot.path}, model {slot.version})"

    @property
    def _text_selector(self) -> Any:
        """The text robot selector that decides tasks now (None: none)."""
        return self._selector_slot.value if self._selector_slot is not None else None

    def _check_bundle(self) -> None:
        """Load the bundle's selector if the bundle was replaced (stat only; ember.engine.reload)."""
        outcome = self._selector_slot.check()
        if outcome is not None:
            self._report_reload(outcome)

    def _on_reload(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self._selector_slot is None:
            response.success, response.message = False, "no bundle parameter: there is no text robot selector to load"
            return response
        outcome = self._selector_slot.reload()
        self._report_reload(outcome)
        response.success = outcome.ok
        response.message = outcome.line("text robot selector")
        return response

    def _report_reload(self, outcome: Any) -> None:
        with self._lock:
            self._text_selector_state = self._selector_state(self._selector_slot)
        if outcome.ok:
            self.get_logger().info(f"{outcome.line('text robot selector')}; {self._text_selector_state}")
        else:
            self.get_logger().error(outcome.line("text robot selector"))

    # -- robots ----------------------------------------------------------------------------
    def _record(self, robot_id: str) -> RobotRecord:
        """A robot's record, made with its report subscriptions and plan publisher when it is
        first expected or heard of (so its first plan does not wait for a new publisher to be
        discovered; lock held).

        Per-robot endpoints go without rclpy's default QoS-event handlers: every handler is
        one more entity in each executor wait, and with hundreds of robots that cost dominates.
        """
        record = self._robots.get(robot_id)
        if record is not None:
            return record
        ns = f"/{robot_id}/"
        quiet = SubscriptionEventCallbacks(use_default_callbacks=False)
        record = RobotRecord(
            report_subs=[
                self.create_subscription(
                    IncidentAnalysis, ns + self._incident_topic, self._on_incident, REPORT_QOS, event_callbacks=quiet
                ),
                self.create_subscription(
                    RobotSelection, ns + self._selection_topic, self._on_selection, REPORT_QOS, event_callbacks=quiet
                ),
            ],
            plan_pub=self.create_publisher(
                ActionPlan, ns + self._plan_topic, PLAN_QOS,
                event_callbacks=PublisherEventCallbacks(use_default_callbacks=False),
            ),
        )
        self._robots[robot_id] = record
        return record

    def _on_status(self, msg: RobotStatus) -> None:
        rid = msg.robot_id
        problem = status_problem(msg)
        if problem:
            self._warn_once(f"bad-status-{rid}-{problem}", f"ignoring heartbeats of {rid!r}: {problem}")
            return
        arrived = self.get_clock().now().nanoseconds * 1e-9  # before waiting for the lock: delay only adds
        with self._lock:
            self._counts["status_msgs"] += 1
            if self._other_robot_of_that_name(msg):
                return
            record = self._record(rid)
            first = record.last_seen is None
            was_online = rid in self._alloc.robots and self._alloc.robots[rid].online
            record.last_seen = time.monotonic()
            if record.clock.add(_stamp_seconds(msg.header.stamp), arrived):
                self._check_clock(rid, record)
            changes = self._alloc.update_robot(rid, msg.robot_type, msg.battery, msg.available, online=True)
            self._apply(changes, reason=f"{rid} status")
            self._cancel_stale_plan(rid, msg.current_plan_id)
            if msg.current_plan_id:
                record.resent.clear()  # it holds plans again: a later loss is a new one
            else:
                self._resend_lost_plans(rid, record)
        if first:
            self.get_logger().info(f"robot {rid} ({msg.robot_type}) joined, battery {msg.battery:.0%}")
        elif not was_online:
            self.get_logger().info(f"robot {rid} is back online")

    def _check_clock(self, robot_id: str, record: RobotRecord) -> None:
        """Alert (one warning line and a clock_skew alert) when a robot's clock is further than
        clock_skew_warn_s off the manager's, once its estimate rests on a full window of heartbeats;
        again only when the offset changed a lot since (fusion.skew_change), and log when it came
        back (lock held)."""
        offset = record.clock.value
        if offset is None or not record.clock.settled:
            return
        change = skew_change(offset, record.skew_alerted, self._skew_warn)
        if change == "alert":
            record.skew_alerted = offset
            side = "behind" if offset > 0 else "ahead of"
            self._alert({
                "kind": "clock_skew", "robot_id": robot_id, "behind_s": round(offset, 3),
                "reason": f"{robot_id}'s clock is {abs(offset):.1f} s {side} the manager's: its reports are "
                          "fused on corrected stamps; sync its clock (NTP/chrony)",
            })
        elif change == "clear":
            record.skew_alerted = None
            self.get_logger().info(f"{robot_id}'s clock is within {self._skew_warn:g} s of the manager's again "
                                   f"({offset:+.3f} s)")

    def _other_robot_of_that_name(self, msg: RobotStatus) -> bool:
        """True (and a warning, once) for a heartbeat whose type differs from that of the online
        robot of its id: two robots with one name. The first keeps the name until it goes offline,
        so steps do not move with every heartbeat (lock held)."""
        known = self._alloc.robots.get(msg.robot_id)
        if known is None or not known.online or known.robot_type == msg.robot_type:
            return False
        self._warn_once(
            f"two-{msg.robot_id}-{msg.robot_type}",
            f"heartbeats of {msg.robot_id!r} say {msg.robot_type}, but it is online as a {known.robot_type}: "
            f"two robots with one name? Ignoring the {msg.robot_type}'s until the {known.robot_type} goes offline",
        )
        return True

    def _cancel_stale_plan(self, robot_id: str, plan_id: str) -> None:
        """A heartbeat names a plan this manager has not given the robot (one of a previous run of
        the manager, or one cancelled since): cancel it, once per plan (lock held)."""
        task_id, _, addressee = plan_id.rpartition("/")
        if not plan_id or addressee != robot_id or self._alloc.has_plan(task_id, robot_id):
            return
        if not self._remember_cancelled(robot_id, plan_id):
            return
        self.get_logger().info(f"{robot_id} works on plan {plan_id}, which this manager does not hold: cancelling it")
        self._publish_plan(task_id, robot_id, STATUS_CANCELLED, (), incident_id="")

    def _resend_lost_plans(self, robot_id: str, record: RobotRecord) -> None:
        """A heartbeat says the robot holds no plan while it holds steps here: it restarted (quicker
        than heartbeat_timeout_s, so it never went offline) and the plan topic's history (PLAN_QOS,
        the last messages only) may not have covered its plans. Send each again, unchanged, once no
        plan was sent to it for heartbeat_timeout_s (a heartbeat older than a plan in flight names
        none yet). Each plan once until a heartbeat names a plan again: a robot that never fills
        current_plan_id gets one copy, not one per heartbeat (lock held)."""
        held = {self._plan_id(t, robot_id): t for t in self._alloc.tasks() if self._alloc.has_plan(t, robot_id)}
        resent = record.resent
        resent.intersection_update(held)  # plans closed since are forgotten
        todo = [t for pid, t in held.items() if pid not in resent]
        if not todo or time.monotonic() - record.last_plan_sent < self._timeout:
            return
        self.get_logger().warning(f"{robot_id} holds no plan but has {len(todo)} here (restarted?): sending them again")
        for task_id in todo:
            resent.add(self._plan_id(task_id, robot_id))
            info = self._tasks.get(task_id, {})
            steps = self._alloc.plan_of(task_id, robot_id)
            self._publish_plan(task_id, robot_id, STATUS_UPDATED, steps, info.get("incident_id", ""))
            self._counts["plans_resent"] += 1

    def _remember_cancelled(self, robot_id: str, plan_id: str) -> bool:
        """Note that `robot_id` got a cancellation of `plan_id`; False if it already had one
        (a heartbeat sent before the cancellation arrived names the plan: no second one)."""
        sent = self._record(robot_id).stale_cancelled
        if plan_id in sent:
            return False
        if len(sent) >= MAX_STALE_PLANS:
            sent.clear()
        sent.add(plan_id)
        return True

    def _check_liveness(self) -> None:
        now = time.monotonic()
        with self._lock:
            for rid, record in list(self._robots.items()):
                if record.last_seen is None:
                    continue
                silent = now - record.last_seen
                robot = self._alloc.robots.get(rid)
                if robot is not None and robot.online and silent > self._timeout:
                    self.get_logger().warning(f"robot {rid} offline: no heartbeat for {silent:.1f}s")
                    self._apply(self._alloc.set_offline(rid), reason=f"{rid} offline")
                if 0 < self._forget_after < silent:
                    self._forget_robot(rid)
            if self._waiting_tasks:
                self._retry_waiting_tasks()

    def _forget_robot(self, robot_id: str) -> None:
        """Drop a robot gone for good (offline for forget_after_s, not one of robot_ids, holding no
        step, no SubmitTask using its client): its state and its ROS endpoints (lock held). If it
        comes back it joins anew; a plan it still names is cancelled then (_cancel_stale_plan)."""
        record = self._robots.get(robot_id)
        if robot_id in self._expected or record is None or record.analyzing or not self._alloc.forget_robot(robot_id):
            return
        del self._robots[robot_id]
        for sub in record.report_subs:
            self.destroy_subscription(sub)
        self.destroy_publisher(record.plan_pub)
        if record.analyze_client is not None:
            self._task_node.destroy_client(record.analyze_client)
        self._fuser.forget_robot(robot_id)
        self._counts["robots_forgotten"] += 1
        self.get_logger().info(f"robot {robot_id} forgotten: offline for more than {self._forget_after:g}s")

    # -- reports ---------------------------------------------------------------------------
    def _rejected(self, msg: IncidentAnalysis | RobotSelection) -> bool:
        """Count and warn (once per robot and kind) about a report that cannot be fused."""
        problem = report_problem(msg)
        if not problem:
            return False
        kind = type(msg).__name__
        with self._lock:
            self._counts["reports_rejected"] += 1
        self._warn_once(f"bad-{kind}-{msg.robot_id}", f"ignoring {kind} of {msg.robot_id!r}: {problem}")
        return True

    def _report_stamp(self, msg: IncidentAnalysis | RobotSelection) -> float:
        """A report's source-image stamp (s). A reporter that left it zero gets its arrival time on
        the node's clock, shared by the analysis and the selection of one image: the second of the
        pair arriving within ZERO_STAMP_PAIR_S takes the first one's, so the two still join (the
        fuser joins them by robot and stamp; lock held)."""
        stamp = _stamp_seconds(msg.header.stamp)
        if stamp:
            return stamp
        now = self.get_clock().now().nanoseconds * 1e-9
        record = self._robots.get(msg.robot_id)
        if record is None:
            return now
        kind = type(msg).__name__
        if kind not in record.zero_stamp_kinds and 0.0 <= now - record.zero_stamp <= ZERO_STAMP_PAIR_S:
            record.zero_stamp_kinds.add(kind)
            return record.zero_stamp
        record.zero_stamp, record.zero_stamp_kinds = now, {kind}
        return now

    def _clock_offset(self, msg: IncidentAnalysis) -> float:
        """What to add to a report's stamp to put it on the manager's clock: its robot's estimated
        clock offset; 0 for a zero stamp (_report_stamp gave it the manager's time) or a robot
        without a heartbeat yet (its raw stamps; lock held)."""
        record = self._robots.get(msg.robot_id)
        if record is None or not _stamp_seconds(msg.header.stamp):
            return 0.0
        return record.clock.value or 0.0

    def _on_incident(self, msg: IncidentAnalysis) -> None:
        if self._rejected(msg):
            return
        with self._lock:
            report = Report(msg.robot_id, self._report_stamp(msg), msg.incident_type, float(msg.confidence), msg.place,
                            msg.description, msg.model_version, offset=self._clock_offset(msg))
            self._counts["reports"] += 1
            record = self._robots.get(msg.robot_id)
            if record is not None:
                record.model_version = msg.model_version
            self._fuser.add_analysis(report, received=time.monotonic())
            self._reports_arrived.notify_all()
            if self._waiting_tasks:
                self._retry_waiting_tasks()

    def _on_selection(self, msg: RobotSelection) -> None:
        if self._rejected(msg):
            return
        with self._lock:
            self._fuser.add_selection(
                msg.robot_id, self._report_stamp(msg), list(msg.scores), list(msg.robot_types), float(msg.confidence), msg.reasoning, msg.task
            )
            self._reports_arrived.notify_all()
            if self._waiting_tasks:
                self._retry_waiting_tasks()

    # -- tasks -----------------------------------------------------------------------------
    def _on_task_topic(self, msg: String) -> None:
        # never blocks: reports share this callback group. Without reports yet, the task waits.
        with self._lock:
            decision = self._decide(msg.data, None)
            if decision is not None:
                self._plan_now(msg.data, decision, time.perf_counter())
            else:
                self._waiting_tasks.append((msg.data, time.monotonic() + self._task_wait))
                self.get_logger().info(f"task {msg.data!r} waits up to {self._task_wait:g}s for incident reports")

    def _on_submit(self, request: SubmitTask.Request, response: SubmitTask.Response) -> SubmitTask.Response:
        incident = None
        if request.has_image:
            incident, error = self._analyze_on_a_robot(request.image, request.task)
            if incident is None:
                response.success, response.message = False, error
                self._alert({"kind": "task_failed", "task": request.task, "reason": error})
                return response
        ok, message, incident_id, plan_ids = self.plan_task(request.task, incident, wait_s=self._task_wait)
        response.success, response.message = ok, message
        response.incident_id, response.plan_ids = incident_id, plan_ids
        return response

    def _analyze_on_a_robot(self, image: Any, task: str) -> tuple[Incident | None, str]:
        with self._lock:
            live = [r for r in self._alloc.robots.values() if self._alloc.is_live(r)]
            live.sort(key=lambda r: (self._alloc.load(r.robot_id), r.robot_id))
        for robot in live:
            rid = robot.robot_id
            with self._lock:
                record = self._robots.get(rid)
                if rid not in self._alloc.robots or record is None:  # forgotten meanwhile
                    continue
                if record.analyze_client is None:
                    record.analyze_client = self._task_node.create_client(
                        AnalyzeImage, f"/{rid}/{self._analyze_service}", callback_group=self._io_group
                    )
                record.analyzing += 1
                client = record.analyze_client
            try:
                res = self._call_analyze(client, image, task)
            finally:
                with self._lock:
                    record.analyzing -= 1
            if res is None:
                continue
            if not res.success:
                return None, f"{robot.robot_id} could not analyse the image: {res.message}"
            if not _stamp_seconds(res.analysis.header.stamp):
                now = self.get_clock().now().to_msg()
                res.analysis.header.stamp = now
                res.selection.header.stamp = now
            self._on_incident(res.analysis)
            self._on_selection(res.selection)
            with self._lock:
                return self._fuser.incident_of(res.analysis.robot_id, _stamp_seconds(res.analysis.header.stamp)), ""
        return None, "no live robot answered AnalyzeImage for the task's image"

    def _call_analyze(self, client: Any, image: Any, task: str) -> AnalyzeImage.Response | None:
        """One robot's AnalyzeImage response, or None when it does not answer in time."""
        if not client.wait_for_service(timeout_sec=2.0):
            return None
        done = threading.Event()
        future = client.call_async(AnalyzeImage.Request(image=image, task=task))
        future.add_done_callback(lambda _f, ev=done: ev.set())
        if not self._wait(done, self._analyze_timeout) or future.result() is None:
            client.remove_pending_request(future)
            return None
        return future.result()

    def _wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait for `event` up to `timeout` s; False at once when the manager shuts down."""
        deadline = time.monotonic() + timeout
        while not event.wait(min(0.1, max(deadline - time.monotonic(), 0.0))):
            if self._closing.is_set() or time.monotonic() >= deadline:
                return False
        return True

    def _decide(self, task: str, incident: Incident | None) -> Decision | None:
        """What to plan a task on (lock held), or None while nothing decides it yet. `incident` is
        the one a robot saw in the task's own image, if any."""
        text = self._text_selection(task)
        if text is not None:  # steps from the task's text, unless a robot's plan was written for it
            return Decision(incident or self._fuser.pick(task), text, steps_from_incident=incident is not None)
        incident = incident or self._fuser.pick(task)
        fused = incident.fused_scores() if incident is not None else None
        if fused is None:
            return None
        selection = Selection(fused, required_types(fused, self._threshold, self._max_types), "camera reports")
        return Decision(incident, selection, steps_from_incident=True)

    def plan_task(
        self, task: str, incident: Incident | None = None, wait_s: float = 0.0
    ) -> tuple[bool, str, str, list[str]]:
        """Plan an operator task: (success, message, incident_id, plan ids of the robots).

        Waits up to `wait_s` for a report with a robot selection when nothing decides the task yet.
        """
        deadline = time.monotonic() + wait_s
        with self._reports_arrived:
            decision = self._decide(task, incident)
            if decision is None and wait_s > 0:
                self.get_logger().info(f"task {task!r} waits up to {wait_s:g}s for incident reports")
            while decision is None and time.monotonic() < deadline and not self._closing.is_set():
                self._reports_arrived.wait(deadline - time.monotonic())
                decision = self._decide(task, incident)
            if decision is None and self._closing.is_set():
                return False, "the fleet manager is shutting down", "", []
            if decision is None:
                picked = incident or self._fuser.pick(task)
                reason = "no incident reported yet" if picked is None else "no robot selection reported yet"
                self._counts["tasks_failed"] += 1
                self._alert({"kind": "task_failed", "task": task, "reason": reason})
                return False, reason, "", []
            return self._plan_now(task, decision, time.perf_counter())

    def _plan_now(self, task: str, decision: Decision, t0: float) -> tuple[bool, str, str, list[str]]:
        """Allocate a decided task (lock held)."""
        self._task_count += 1
        task_id = f"task-{self._task_count:04d}"
        incident, selection = decision.incident, decision.selection
        if selection.basis == TEXT_BASIS:
            self._counts["tasks_text_selected"] += 1
        if incident is None:
            self._counts["tasks_without_incident"] += 1
        types = selection.types
        incident_id = incident.incident_id if incident is not None else ""
        steps, source = build_steps(task_id, incident if decision.steps_from_incident else None, types, task)
        self._tasks[task_id] = {"task": task, "incident_id": incident_id, "types": types, "basis": selection.basis}
        self._counts["tasks"] += 1
        self._publish_fused(task, incident, selection)
        changes = self._alloc.add_task(task_id, steps, selection.scores)
        self._apply(changes, reason=f"{task_id} new")
        robots = self._alloc.robots_of(task_id)
        pending = [s for s in steps if self._alloc.owner(s.step_id) is None]
        self._alloc_ms.append((time.perf_counter() - t0) * 1000.0)
        plan_ids = [self._plan_id(task_id, r) for r in robots]
        about = (
            f"for {incident.incident_id} ({incident.label}, {len(incident.reports)} reports)"
            if incident is not None else "(no incident)"
        )
        msg = (
            f"{task_id} {about}: types {', '.join(types)} ({selection.basis}); {len(steps)} steps ({source}) to "
            f"{', '.join(robots) or 'no robot'}"
            + (f"; {len(pending)} unassignable (see /fleet/alerts)" if pending else "")
        )
        self.get_logger().info(msg)
        return bool(robots), msg, incident_id, plan_ids

    def _text_selection(self, task: str) -> Selection | None:
        """The text selector's scores and types (best first) for the task, or None when there is
        no selector, the task is the camera default or none of its words is known."""
        selector = self._text_selector  # read once: a reload may swap it meanwhile
        sel = selector.select_task(task) if selector is not None else None
        if sel is None:
            return None
        types = [ROBOT_TYPES[i] for i in sel.chosen][: self._max_types]
        return Selection([float(s) for s in sel.scores], types, TEXT_BASIS)

    def _retry_waiting_tasks(self) -> None:
        """Plan topic tasks that waited for reports, or give up on them after task_wait_s (lock held)."""
        now = time.monotonic()
        still = []
        for task, deadline in self._waiting_tasks:
            decision = self._decide(task, None)
            if decision is not None:
                self._plan_now(task, decision, time.perf_counter())
            elif now >= deadline:
                self._counts["tasks_failed"] += 1
                self._alert({"kind": "task_failed", "task": task, "reason": "no incident with a robot selection reported"})
            else:
                still.append((task, deadline))
        self._waiting_tasks = still

    def _on_task_done(self, msg: String) -> None:
        task_id = msg.data.strip()
        if not self.finish_task(task_id):
            self._warn_once(f"done-{task_id}", f"{task_id!r} on the task-done topic is not an open task")

    def finish_task(self, task_id: str) -> bool:
        """Close a task (done or withdrawn): its robots get cancellations, its steps stop
        counting as their load. False for a task id that is not open."""
        with self._lock:
            if task_id not in self._alloc.tasks():
                return False
            self._apply(self._alloc.finish_task(task_id), reason=f"{task_id} finished")
            self._tasks.pop(task_id, None)
            self._counts["tasks_finished"] += 1
        self.get_logger().info(f"task {task_id} finished: its plans are cancelled")
        return True

    # -- output ----------------------------------------------------------------------------
    @staticmethod
    def _plan_id(task_id: str, robot_id: str) -> str:
        return f"{task_id}/{robot_id}"

    def _apply(self, changes: Changes, reason: str) -> None:
        """Publish what an allocator operation changed (called with the lock held)."""
        if not changes:
            return
        for step_id, old, new in changes.moved:
            self.get_logger().warning(f"{reason}: step {step_id} moves from {old} to {new}")
        for pc in changes.plans:
            info = self._tasks.get(pc.task_id, {})
            self._publish_plan(pc.task_id, pc.robot_id, pc.status, pc.steps, info.get("incident_id", ""))
            if pc.status == STATUS_CANCELLED:
                self._remember_cancelled(pc.robot_id, self._plan_id(pc.task_id, pc.robot_id))
                self.get_logger().info(f"{reason}: plan {self._plan_id(pc.task_id, pc.robot_id)} cancelled")
        for u in changes.unassignable:
            info = self._tasks.get(u.step.task_id, {})
            self._alert(
                {
                    "kind": "unassignable",
                    "task_id": u.step.task_id,
                    "incident_id": info.get("incident_id", ""),
                    "step_id": u.step.step_id,
                    "order": u.step.order,
                    "description": u.step.description,
                    "robot_type": u.step.robot_type,
                    "reason": u.reason,
                    "cause": reason,
                }
            )

    def _publish_plan(self, task_id: str, robot_id: str, status: str, steps: tuple, incident_id: str) -> None:
        """Send one robot its whole step list for a task (lock held)."""
        plan = ActionPlan()
        plan.header.stamp = self.get_clock().now().to_msg()
        plan.header.frame_id = MANAGER_ID
        plan.plan_id = self._plan_id(task_id, robot_id)
        plan.incident_id = incident_id
        plan.robot_id = robot_id
        plan.status = status
        robot_type = self._alloc.robots[robot_id].robot_type if robot_id in self._alloc.robots else ""
        plan.steps = [
            ActionStep(order=s.order, description=s.description, robot_type=s.robot_type or robot_type, robot_id=robot_id)
            for s in steps
        ]
        record = self._record(robot_id)
        record.plan_pub.publish(plan)
        record.last_plan_sent = time.monotonic()
        self._counts["plans_sent"] += 1

    def _alert(self, payload: dict[str, Any]) -> None:
        self._counts["alerts"] += 1
        self._pub_alerts.publish(String(data=json.dumps(payload, sort_keys=True)))
        about = payload.get("step_id", payload.get("task", payload.get("robot_id", "")))
        self.get_logger().warning(f"ALERT {payload.get('kind')}: {about} "
                                  f"- {payload.get('reason', '')}")

    def _publish_fused(self, task: str, incident: Incident | None, selection: Selection) -> None:
        msg = RobotSelection()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = incident.incident_id if incident is not None else ""
        msg.robot_id = MANAGER_ID
        msg.task = task
        msg.robot_types = list(selection.types)
        msg.scores = [float(s) for s in selection.scores]
        msg.confidence = float(incident.confidence if incident is not None else max(selection.scores))
        by_text = selection.basis == TEXT_BASIS
        msg.reasoning = (
            (f"{incident.incident_id}: '{incident.label}' at {incident.place or '?'} reported by "
             f"{', '.join(incident.reporters)}; " if incident is not None else "operator task without an incident; ")
            + ("scores of the text robot selector on the task " if by_text else "fused scores ")
            + ", ".join(f"{t} {s:.2f}" for t, s in zip(ROBOT_TYPES, selection.scores, strict=True))
            + (f"; its set: {', '.join(selection.types)}" if by_text
               else f"; types at or above {self._threshold:g}: {', '.join(selection.types)}")
        )
        self._pub_fused.publish(msg)

    def _warn_once(self, key: str, text: str) -> None:
        with self._lock:
            if key in self._warned:
                self._warned.move_to_end(key)
                return
            self._warned[key] = None
            if len(self._warned) > MAX_WARNINGS:
                self._warned.popitem(last=False)
        self.get_logger().warning(text)

    def snapshot(self) -> dict[str, Any]:
        """Counts of the fleet's state (also published on /diagnostics)."""
        with self._lock:
            robots = self._alloc.robots.values()
            held = sum(self._alloc.load(r) for r in self._alloc.robots)
            seen = {rid for rid, record in self._robots.items() if record.last_seen is not None}
            return {
                "robots_seen": len(seen),
                "robots_expected": len(self._expected),
                "robots_online": sum(r.online for r in robots),
                "robots_live": sum(self._alloc.is_live(r) for r in robots),
                "never_seen": ",".join(sorted(set(self._expected) - seen)),
                "tasks_open": len(self._alloc.tasks()),
                "steps_assigned": held,
                "steps_unassignable": len(self._alloc.pending()),
                "incidents": len(self._fuser.incidents),
                "clock_skewed": ",".join(sorted(rid for rid, r in self._robots.items() if r.skew_alerted is not None)),
                **{f"clock_behind_s.{rid}": r.clock.value for rid, r in sorted(self._robots.items())
                   if r.clock.value is not None},
                "allocation_ms_p50": statistics.median(self._alloc_ms) if self._alloc_ms else 0.0,
                "text_selector": self._text_selector_state,
                "model_versions": model_versions_text(self._model_versions()),
                **self._counts,
            }

    def _model_versions(self) -> dict[str, str]:
        """Who runs which model: each robot's latest report's version (`<id> offline` for a robot whose
        heartbeats stopped: it runs that model when it comes back), and the text selector's (lock held)."""
        versions = {}
        for rid, record in self._robots.items():
            if record.model_version:
                robot = self._alloc.robots.get(rid)
                versions[rid if robot is None or robot.online else f"{rid} offline"] = record.model_version
        slot = self._selector_slot
        if slot is not None and slot.value is not None:
            versions["text selector"] = slot.version
        return versions

    def _publish_diagnostics(self) -> None:
        snap = self.snapshot()
        status = DiagnosticStatus()
        status.name = "ember/fleet_manager"
        status.hardware_id = MANAGER_ID
        status.level = (DiagnosticStatus.WARN if snap["steps_unassignable"] or snap["text_selector"].startswith("error")
                        else DiagnosticStatus.OK)
        if snap["clock_skewed"]:  # a robot's clock is off: its reports are fused on corrected stamps
            status.level = max(status.level, DiagnosticStatus.WARN)
        status.message = (
            f"{snap['robots_online']}/{snap['robots_seen']} robots online, {snap['tasks_open']} open tasks, "
            f"{snap['steps_unassignable']} unassignable steps"
        )
        if ";" in snap["model_versions"]:  # mid-rollout: reports of several models are fused
            status.message += f"; models in use: {snap['model_versions']}"
        status.values = [
            KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in snap.items()
        ]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._pub_diag.publish(arr)


    def _spin_tasks(self) -> None:
        try:
            self._task_executor.spin()
        except (KeyboardInterrupt, Exception) as exc:
            if not stopped_by_signal(exc, self.context):
                raise

    def destroy_node(self) -> None:
        """Stop the helper executor and node, then this node."""
        self._closing.set()  # wake SubmitTask calls that wait for reports or a robot's analysis
        with self._reports_arrived:
            self._reports_arrived.notify_all()
        if self.context.ok():  # stop its spin, then wait for the thread
            self._task_executor.shutdown(timeout_sec=5.0)
            self._task_thread.join(timeout=10.0)
        else:  # a stop signal: its spin ends by itself. Only then shut it down (in-flight callbacks finish):
            # triggering its guard condition while its thread still waited on it, on the shut-down
            # context, crashed the manager (SIGSEGV, 4 of ~300 stops under CPU load)
            self._task_thread.join(timeout=10.0)
            self._task_executor.shutdown(timeout_sec=5.0)
        self._task_node.destroy_node()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """`ros2 run ember fleet_manager`: run until SIGINT/SIGTERM, exit 0."""
    # single-threaded: its callbacks never block (see __init__)
    run_node(FleetManager, "fleet_manager", args, multi_threaded=False)

if __name__ == "__main__":
    main()
