"""The per-robot incident node: camera -> EmberVLM -> IncidentAnalysis + RobotSelection.

`ros2 run ember incident_node --ros-args -r __ns:=/drone_1 --params-file robot.yaml`, or
started by `ember-fleet` / fleet.launch.py from config/fleet.yaml.

Receive path and inference are apart: the camera callbacks only put the message into a
one-frame slot (replacing, and counting as dropped, a frame the worker has not started on);
a worker thread takes the newest frame, decodes it, runs the model and publishes. A slow
model therefore drops frames; nothing queues and latency does not grow. A frame that comes
on both topics (image_transport publishes raw and compressed when both have subscribers) is
analysed once: the copy with the same stamp and frame_id is skipped and counted as duplicate.

Parameters (the starred ones are read at every use, so `ros2 param set` changes them; the
others are read-only, and `ros2 param set` refuses them; numbers are range-checked):
  robot_id, robot_type, bundle, threads, max_new_tokens*,
  default_task*, max_rate_hz* (0 = as fast as the model goes),
  processing_delay_s* (extra fixed delay per analysis: simulates a slower robot computer),
  battery* (0..1, simulated unless battery_topic names a sensor_msgs/BatteryState topic),
  available*, heartbeat_period_s, diagnostics_period_s,
  bundle_check_period_s (0 = off), camera_silence_warn_s (0 = off), image_topic, compressed_topic (default <image_topic>/compressed,
  after remapping), incident_topic, selection_topic, plan_topic, analyze_service, reload_service,
  status_topic, battery_topic.

A new bundle swapped in at `bundle` (ember-export --output, or copied beside and renamed in) is
loaded without a restart: every bundle_check_period_s the node compares the directory's stat
identity with what it loaded (no hashing), and on a change that has settled it loads the new engine
and checks it completely while the old one keeps analysing, then swaps them between two analyses
(ember.engine.reload). The reload_service (std_srvs/Trigger) loads the bundle at once. A bundle that
fails (half copied, corrupt, hash mismatch, other robot types) never replaces the running model: one
error line, /diagnostics WARN naming it, no retry until the directory changes again.

The camera watch (ember.ros.camera_watch): a camera topic with no publisher, or publishers whose
frames never arrive (a stalled driver; raw frames larger than Fast DDS's default 512 KiB
shared-memory segment), for camera_silence_warn_s is one warning naming the cause and what to do,
and /diagnostics WARN (`camera`, `camera_publishers`, `camera_silent_s`) until frames come again.

Under use_sim_time, reports keep their source image's stamp; heartbeats and /diagnostics keep
their period in wall time (a paused simulation is not a dead robot) and carry simulated stamps;
max_rate_hz is a compute budget, in wall time.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from ember_msgs.msg import ActionPlan, IncidentAnalysis, RobotSelection, RobotStatus
from ember_msgs.srv import AnalyzeImage
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import BatteryState, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from ember.engine.reload import Outcome, engine_slot
from ember.fleet_config import InferenceConfig
from ember.labels import NUM_ROBOT_TYPES, ROBOT_TYPES
from ember.prompting import DEFAULT_TASK
from ember.ros import camera_watch, runtime
from ember.ros.conversions import compressed_to_rgb, image_msg_to_rgb
from ember.ros.qos import BATTERY_QOS, CAMERA_QOS, DIAGNOSTICS_QOS, PLAN_QOS, REPORT_QOS, STATUS_QOS
from ember.ros.spinning import run_node

_ERROR_KINDS = (
    ("unknown image encoding", "unknown_encoding"),
    ("zero size", "zero_size"),
    ("odd width", "odd_width"),
    ("image step", "bad_step"),
    ("data length", "bad_data_length"),
    ("unsupported compressed format", "unsupported_compressed"),
    ("compressed image is empty", "empty_compressed"),
    ("corrupt compressed", "corrupt_compressed"),
    ("exceeds the limit", "oversized"),
)
MAX_LOGGED_KINDS = 64
"""Distinct malformed-frame kinds (and unknown encodings) logged once each; later ones are only counted."""
DUPLICATE_WINDOW_S = 1.0
"""A frame with the stamp and frame_id of the last analysed one, arriving within this many
seconds of it, is the same picture on the other transport (raw vs compressed) and is skipped."""


def error_kind(exc: Exception) -> str:
    """A short, stable name for the kind of malformed image (from conversions' messages)."""
    text = str(exc)
    for needle, kind in _ERROR_KINDS:
        if needle in text:
            return kind
    return "malformed_other"


@dataclass
class Frame:
    """A received camera message, not decoded yet."""

    msg: Any
    compressed: bool
    received: float
    """time.monotonic() when the callback got it"""

    def key(self) -> tuple[int, int, str] | None:
        """(sec, nanosec, frame_id) of the camera's stamp; None for an unstamped frame."""
        stamp = self.msg.header.stamp
        if not (stamp.sec or stamp.nanosec):
            return None
        return (stamp.sec, stamp.nanosec, self.msg.header.frame_id)

    def duplicates(self, other: Frame | None) -> bool:
        """True if this is another copy (other transport) of the frame `other`."""
        if other is None or self.key() is None or self.key() != other.key():
            return False
        return abs(self.received - other.received) <= DUPLICATE_WINDOW_S


def source_header(header: Header, arrival_stamp: Callable[[], Any]) -> Header:
    """The header the reports of an image carry: the image's own, stamped with its arrival time
    (`arrival_stamp()`, asked only then) when the camera left the stamp zero (the fleet manager
    joins a robot's two reports by stamp)."""
    if header.stamp.sec or header.stamp.nanosec:
        return header
    return Header(stamp=arrival_stamp(), frame_id=header.frame_id)


class LatestFrame:
    """A one-frame slot: `put` replaces what is there (returning True when that dropped an
    unprocessed frame), `take` blocks for the newest frame."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Store the newest frame; True if an unprocessed one was replaced."""
        with self._cond:
            dropped = self._frame is not None
            self._frame = frame
            self._cond.notify()
            return dropped

    def take(self, timeout: float) -> Frame | None:
        """The newest frame (emptying the slot), or None after `timeout` or when closed."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def pending(self) -> int:
        """1 if a frame waits, else 0."""
        with self._cond:
            return int(self._frame is not None)

    def close(self) -> None:
        """Wake the worker for shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class FrameStats:
    """Counters for /diagnostics (guarded by `lock`)."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    duplicate: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    inference_errors: int = 0
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    lock: threading.Lock = field(default_factory=threading.Lock)


def analysis_messages(analysis: Any, header: Any, robot_id: str, task: str, latency_ms: float):
    """(IncidentAnalysis, RobotSelection) for an `ember.engine.Analysis` of an image with `header`."""
    inc = IncidentAnalysis()
    inc.header = header
    inc.robot_id = robot_id
    inc.incident_type = analysis.incident_type
    inc.confidence = float(analysis.confidence)
    inc.labels = list(analysis.incident_labels)
    inc.scores = [float(s) for s in analysis.incident_scores]
    inc.place = analysis.place
    inc.description = analysis.text
    inc.model_version = analysis.model_version
    inc.latency_ms = float(latency_ms)
    sel = RobotSelection()
    sel.header = header
    sel.robot_id = robot_id
    sel.task = task
    sel.robot_types = list(analysis.robot_types)
    scores = [float(s) for s in analysis.robot_scores]
    if len(scores) != NUM_ROBOT_TYPES:
        raise ValueError(f"engine returned {len(scores)} robot scores, expected {NUM_ROBOT_TYPES}")
    sel.scores = scores
    sel.confidence = float(analysis.confidence)
    sel.reasoning = analysis.reasoning
    return inc, sel


class IncidentNode(Node):
    """One robot's EmberVLM on its camera stream."""

    def __init__(self, node_name: str = "incident_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        default_id = self.get_namespace().strip("/").split("/")[-1] or "robot"
        self._declare_parameters(default_id)
        prm = self._param
        self._robot_id = prm("robot_id")
        self._robot_type = prm("robot_type")
        bundle = prm("bundle")
        image_topic = self.resolve_topic_name(prm("image_topic"))
        compressed_topic = prm("compressed_topic") or f"{image_topic}/compressed"
        battery_topic = prm("battery_topic")

        if self._robot_type not in ROBOT_TYPES:
            raise ValueError(f"parameter robot_type {self._robot_type!r} is not one of {', '.join(ROBOT_TYPES)}")
        if not bundle:
            raise ValueError("parameter 'bundle' (the model bundle directory) is not set")
        threads = int(prm("threads"))
        self._model = engine_slot(bundle, threads)

        self._stats = FrameStats()
        self._slot = LatestFrame()
        self._logged_kinds: set[str] = set()
        self._plans: dict[str, ActionPlan] = {}
        self._current_plan = ""
        self._measured_battery: float | None = None
        self._stop = threading.Event()

        self._pub_incident = self.create_publisher(IncidentAnalysis, prm("incident_topic"), REPORT_QOS)
        self._pub_selection = self.create_publisher(RobotSelection, prm("selection_topic"), REPORT_QOS)
        self._pub_status = self.create_publisher(RobotStatus, prm("status_topic"), STATUS_QOS)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self._camera_subs = (
            self.create_subscription(Image, image_topic, lambda m: self._on_frame(m, False), CAMERA_QOS),
            self.create_subscription(CompressedImage, compressed_topic, lambda m: self._on_frame(m, True), CAMERA_QOS),
        )
        self._camera = camera_watch.CameraWatch(f"{image_topic} and {self.resolve_topic_name(compressed_topic)}",
                                                float(prm("camera_silence_warn_s")), time.monotonic())
        self.create_subscription(ActionPlan, prm("plan_topic"), self._on_plan, PLAN_QOS)
        if battery_topic:  # best effort: matches reliable and best-effort (sensor-data QoS) drivers
            self.create_subscription(BatteryState, battery_topic, self._on_battery, BATTERY_QOS)
        self._service_group = MutuallyExclusiveCallbackGroup()
        self.create_service(AnalyzeImage, prm("analyze_service"), self._on_analyze, callback_group=self._service_group)
        reload_group = MutuallyExclusiveCallbackGroup()  # a reload never blocks analyses, heartbeats or itself
        self.create_service(Trigger, prm("reload_service"), self._on_reload, callback_group=reload_group)
        # liveness in wall time, also under use_sim_time: a paused simulation is not a dead robot
        timer_group = MutuallyExclusiveCallbackGroup()
        steady = runtime.steady_clock()
        self.create_timer(prm("heartbeat_period_s"), self._publish_status, callback_group=timer_group, clock=steady)
        self.create_timer(prm("diagnostics_period_s"), self._publish_diagnostics, callback_group=timer_group, clock=steady)
        if prm("bundle_check_period_s") > 0:
            self.create_timer(prm("bundle_check_period_s"), self._check_bundle, callback_group=reload_group, clock=steady)

        self._worker = threading.Thread(target=self._work, name=f"ember-infer-{self._robot_id}", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{self._robot_id} ({self._robot_type}) ready: model {self.model_version or '?'}, "
            f"camera {image_topic} and {self.resolve_topic_name(compressed_topic)}"
        )

    # -- parameters ------------------------------------------------------------------------
    def _declare_parameters(self, default_id: str) -> None:
        """Declare every parameter: those read once at start are read-only (`ros2 param set`
        refuses them), the others are read at every use; numbers are range-checked, at start
        (a bad params file stops the node, naming the parameter) and at run time."""
        ro, rng = runtime.read_only, runtime.number_range
        self.declare_parameters("", [
            ("robot_id", default_id, ro("robot id in reports and heartbeats (default: the namespace)")),
            ("robot_type", "", ro(f"one of {', '.join(ROBOT_TYPES)}")),
            ("bundle", "", ro("model bundle directory")),
            ("threads", 1, rng("onnxruntime threads", 1, 256, integer=True, read_only=True)),
            ("max_new_tokens", 50, rng("most generated tokens per analysis", 0, 4096, integer=True)),
            ("default_task", DEFAULT_TASK, ParameterDescriptor(description="task for camera frames")),
            ("max_rate_hz", 1.0, rng("most analyses per second (wall time); 0 = unlimited", 0.0, 1000.0)),
            ("processing_delay_s", 0.0, rng("extra fixed delay per analysis (simulated slow computer)", 0.0, 3600.0)),
            ("battery", 1.0, rng("0..1; simulated unless battery_topic is set", 0.0, 1.0)),
            ("available", True, ParameterDescriptor(description="offered for new tasks")),
            ("heartbeat_period_s", 0.5, rng("RobotStatus period (wall time)", 0.001, 3600.0, read_only=True)),
            ("diagnostics_period_s", 1.0, rng("/diagnostics period (wall time)", 0.001, 3600.0, read_only=True)),
            ("bundle_check_period_s", InferenceConfig.bundle_check_period_s, rng("how often a replaced bundle is looked for (stat only; 0 = off)",
                                               0.0, 3600.0, read_only=True)),
            ("camera_silence_warn_s", InferenceConfig.camera_silence_warn_s,
             rng("warn when no camera frame came for this long (no publisher, or none of its frames); 0 = off",
                 0.0, 86400.0, read_only=True)),
            ("image_topic", "camera/image_raw", ro("sensor_msgs/Image in")),
            ("compressed_topic", "", ro("sensor_msgs/CompressedImage in; empty: <image_topic>/compressed")),
            ("incident_topic", "ember/incident", ro("IncidentAnalysis out")),
            ("selection_topic", "ember/robot_selection", ro("RobotSelection out")),
            ("plan_topic", "ember/action_plan", ro("ActionPlan in")),
            ("analyze_service", "ember/analyze_image", ro("AnalyzeImage service")),
            ("reload_service", "ember/reload_model", ro("std_srvs/Trigger: load the bundle now")),
            ("status_topic", "/fleet/status", ro("RobotStatus heartbeat out")),
            ("battery_topic", "", ro("sensor_msgs/BatteryState in; empty: the battery parameter")),
        ])

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    @property
    def model_version(self) -> str:
        """The model_version of the engine that serves now."""
        return self._model.version

    @property
    def battery(self) -> float:
        """Battery level 0..1 (measured if battery_topic is set, else the parameter)."""
        return self._measured_battery if self._measured_battery is not None else float(self._param("battery"))

    # -- receive path: nothing but the slot ------------------------------------------------
    def _on_frame(self, msg: Any, compressed: bool) -> None:
        frame = Frame(msg, compressed, time.monotonic())
        self._camera.frame(frame.received)
        dropped = self._slot.put(frame)
        with self._stats.lock:
            self._stats.received += 1
            if dropped:
                self._stats.dropped += 1

    # -- worker ----------------------------------------------------------------------------
    def _work(self) -> None:
        next_start = 0.0
        last: Frame | None = None
        while not self._stop.is_set():
            wait = next_start - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            frame = self._slot.take(timeout=0.2)
            if frame is None:
                continue
            if frame.duplicates(last):
                with self._stats.lock:
                    self._stats.duplicate += 1
                continue
            rate = float(self._param("max_rate_hz"))
            next_start = time.monotonic() + (1.0 / rate if rate > 0 else 0.0)
            try:
                if self._process(frame):
                    last = frame  # a copy of a refused frame (other transport) still gets its turn
            except Exception as exc:  # noqa: BLE001 - the node must keep running
                if self._stop.is_set() or not self.context.ok():
                    break
                self._count_error("inference_error", exc, counter="inference")

    def _process(self, frame: Frame) -> bool:
        """Decode, analyse and publish one frame; False if it was refused as malformed."""
        try:
            rgb = compressed_to_rgb(frame.msg) if frame.compressed else image_msg_to_rgb(frame.msg)
        except ValueError as exc:
            kind = error_kind(exc)
            # each unknown encoding is named once (a new camera), not only the first one seen
            detail = str(getattr(frame.msg, "encoding", "")) if kind == "unknown_encoding" else ""
            self._count_error(kind, exc, log_key=f"{kind}:{detail}")
            return False
        task = str(self._param("default_task")) or DEFAULT_TASK
        t0 = time.monotonic()
        with self._model.using() as engine:  # a reload swaps engines only between two analyses
            analysis = engine.analyze(rgb, task=task, max_new_tokens=int(self._param("max_new_tokens")))
        infer_ms = (time.monotonic() - t0) * 1000.0
        delay = float(self._param("processing_delay_s"))
        if delay > 0 and self._stop.wait(delay):
            return True
        if not self.context.ok():
            return True
        latency = (time.monotonic() - frame.received) * 1000.0
        header = source_header(frame.msg.header, lambda: self._clock_stamp(frame.received))
        inc, sel = analysis_messages(analysis, header, self._robot_id, task, latency)
        self._pub_incident.publish(inc)
        self._pub_selection.publish(sel)
        with self._stats.lock:
            self._stats.processed += 1
            self._stats.latency_ms.append(latency)
            self._stats.inference_ms.append(infer_ms)
        return True

    def _count_error(self, kind: str, exc: Exception, counter: str = "malformed", log_key: str = "") -> None:
        """Count a bad frame; log it the first time its `log_key` (default: its kind) is seen."""
        log_key = log_key or kind
        with self._stats.lock:
            if counter == "malformed":
                self._stats.malformed[kind] = self._stats.malformed.get(kind, 0) + 1
            else:
                self._stats.inference_errors += 1
            first = log_key not in self._logged_kinds and len(self._logged_kinds) < MAX_LOGGED_KINDS
            if first:
                self._logged_kinds.add(log_key)
        if first:
            what = "malformed image" if counter == "malformed" else "analysis failed"
            self.get_logger().warning(f"{what} ({kind}): {exc}; further ones of this kind are only counted")

    def _clock_stamp(self, monotonic: float) -> Any:
        """The node's clock (builtin_interfaces/Time) at the time.monotonic() instant `monotonic`.

        Under use_sim_time the simulated clock may stand near zero (just started or reset): an
        instant before it is stamped with the clock's present time, and a clock that has no time
        yet (no /clock received) gives the system time, so the stamp is never zero or negative."""
        now = self.get_clock().now()
        if not now.nanoseconds:
            return Clock(clock_type=ClockType.SYSTEM_TIME).now().to_msg()
        age = int((time.monotonic() - monotonic) * 1e9)
        return (now - Duration(nanoseconds=age)).to_msg() if 0 <= age < now.nanoseconds else now.to_msg()

    # -- service ---------------------------------------------------------------------------
    def _on_analyze(self, request: AnalyzeImage.Request, response: AnalyzeImage.Response) -> AnalyzeImage.Response:
        t0 = time.monotonic()
        header = source_header(request.image.header, lambda: self._clock_stamp(t0))
        try:
            rgb = image_msg_to_rgb(request.image)
        except ValueError as exc:
            response.success = False
            response.message = f"malformed image ({error_kind(exc)}): {exc}"
            return response
        task = request.task or str(self._param("default_task")) or DEFAULT_TASK
        try:
            with self._model.using() as engine:
                analysis = engine.analyze(rgb, task=task, max_new_tokens=int(self._param("max_new_tokens")))
            inc, sel = analysis_messages(
                analysis, header, self._robot_id, task, (time.monotonic() - t0) * 1000.0
            )
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            response.success = False
            response.message = f"analysis failed: {type(exc).__name__}: {exc}"
            return response
        response.success = True
        response.message = f"analyzed by {self._robot_id} in {inc.latency_ms:.0f} ms"
        response.analysis = inc
        response.selection = sel
        return response

    # -- a new model -----------------------------------------------------------------------
    def _check_bundle(self) -> None:
        """Load the bundle if it was replaced (stat only; ember.engine.reload)."""
        outcome = self._model.check()
        if outcome is not None:
            self._report_reload(outcome)

    def _on_reload(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        outcome = self._model.reload()
        self._report_reload(outcome)
        response.success = outcome.ok
        response.message = outcome.line("model")
        return response

    def _report_reload(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.get_logger().info(outcome.line("model"))
        else:
            self.get_logger().error(outcome.line("model"))

    # -- plans, battery, heartbeat, diagnostics --------------------------------------------
    def _on_plan(self, plan: ActionPlan) -> None:
        if plan.robot_id and plan.robot_id != self._robot_id:
            self.get_logger().warning(f"ignoring plan {plan.plan_id} addressed to {plan.robot_id}")
            return
        if plan.status == ActionPlan.STATUS_CANCELLED:
            self._plans.pop(plan.plan_id, None)
            self.get_logger().info(f"plan {plan.plan_id} cancelled")
        else:
            self._plans[plan.plan_id] = plan
            steps = "; ".join(f"{s.order}. {s.description}" for s in plan.steps)
            self.get_logger().info(f"plan {plan.plan_id} ({plan.status}) for {plan.incident_id}: {steps}")
        self._current_plan = next(reversed(self._plans), "") if self._plans else ""

    def _on_battery(self, msg: BatteryState) -> None:
        if msg.percentage == msg.percentage:  # not NaN
            self._measured_battery = min(max(float(msg.percentage), 0.0), 1.0)

    def _publish_status(self) -> None:
        msg = RobotStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self._robot_id
        msg.robot_id = self._robot_id
        msg.robot_type = self._robot_type
        msg.available = bool(self._param("available"))
        msg.battery = float(self.battery)
        msg.current_plan_id = self._current_plan
        self._pub_status.publish(msg)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the frame counters and latencies."""
        with self._stats.lock:
            s = self._stats
            return {
                "frames_received": s.received,
                "frames_processed": s.processed,
                "frames_dropped": s.dropped,
                "frames_duplicate": s.duplicate,
                "frames_malformed": sum(s.malformed.values()),
                "malformed_kinds": dict(s.malformed),
                "inference_errors": s.inference_errors,
                "frames_pending": self._slot.pending(),
                "latency_ms_p50": statistics.median(s.latency_ms) if s.latency_ms else 0.0,
                "latency_ms_max": max(s.latency_ms) if s.latency_ms else 0.0,
                "inference_ms_p50": statistics.median(s.inference_ms) if s.inference_ms else 0.0,
            }

    def _check_camera(self) -> tuple[str, int, float]:
        """The camera watch's state (its change logged once), matched publishers, seconds since a frame."""
        now = time.monotonic()
        publishers = sum(sub.get_publisher_count() for sub in self._camera_subs)
        state, message = self._camera.check(publishers, now)
        if message and state == camera_watch.OK:
            self.get_logger().info(message)
        elif message:  # (one call site per severity: rclpy refuses a site whose severity changes)
            self.get_logger().warning(message)
        return state, publishers, self._camera.silent_s(now)

    def _publish_diagnostics(self) -> None:
        st = self.stats()
        camera, publishers, silent_s = self._check_camera()
        status = DiagnosticStatus()
        status.name = f"ember/{self._robot_id}/incident_node"
        status.hardware_id = self._robot_id
        errors = st["frames_malformed"] + st["inference_errors"]
        reload_error = self._model.error
        camera_bad = camera != camera_watch.OK
        status.level = DiagnosticStatus.WARN if errors or reload_error or camera_bad else DiagnosticStatus.OK
        status.message = f"{st['frames_processed']} analysed, {st['frames_dropped']} dropped, {errors} errors"
        if camera_bad:
            status.message = f"camera: {camera} for {silent_s:.0f} s; {status.message}"
        if reload_error:
            status.message = f"model reload failed, running {self.model_version}: {reload_error}; {status.message}"
        values = {k: v for k, v in st.items() if k != "malformed_kinds"}
        values.update({f"malformed_{k}": v for k, v in st["malformed_kinds"].items()})
        values.update(
            {
                "robot_type": self._robot_type,
                "model_version": self.model_version,
                "model_reload_error": reload_error,
                "battery": round(self.battery, 3),
                "current_plan_id": self._current_plan,
                "camera": camera,
                "camera_publishers": publishers,
                "camera_silent_s": round(silent_s, 1),
            }
        )
        status.values = [KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._pub_diag.publish(arr)

    def destroy_node(self) -> None:
        """Stop the worker before the node's entities go."""
        self._stop.set()
        self._slot.close()
        if self._worker.is_alive():
            self._worker.join(timeout=30)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """`ros2 run ember incident_node`: run until SIGINT/SIGTERM, exit 0."""
    run_node(IncidentNode, "incident_node", args)

if __name__ == "__main__":
    main()

