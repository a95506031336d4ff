"""Live evaluation: replay a bag's camera into a running incident node and collect its answers.

By default an incident node is started as a child process (`python -m ember.ros.incident_node`
in namespace /ember_eval, `max_rate_hz` 0, the evaluation's task and bundle); `connect=NS`
uses a node already running in namespace NS instead. The camera topic is replayed at its
recorded timing into NS/camera/image_raw (or .../compressed); IncidentAnalysis and
RobotSelection on NS/ember/* are matched to frames by header stamp, optionally recorded into
a bag. A frame published without an answer is a dropped frame (the node keeps only the newest).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import yaml

from ember.bag.errors import BagError
from ember.bag.frames import camera_stream, iter_frames, read_ground_truth
from ember.bag.io import open_bag
from ember.eval.bag_eval import EvalRun, FrameInfo, Prediction, f32

DEFAULT_NAMESPACE = "/ember_eval"


class LiveError(RuntimeError):
    """The live run could not produce a complete evaluation (node failed, nothing answered, ...)."""


def frame_infos(path: str | Path, topic: str | None) -> tuple[str, str, list[FrameInfo], list[str]]:
    """(camera topic, type, frames without pixels, the bag's notes) - decoded once to know the
    undecodable ones."""
    with open_bag(path) as bag:
        camera = camera_stream(bag, topic)
        truth = read_ground_truth(bag, camera.topic)
        frames = [FrameInfo(f.index, f.stamp_ns, f.bag_time_ns, f.truth, f.error) for f in iter_frames(bag, camera, truth)]
        notes = list(bag.notes)
    if not frames:
        raise BagError(f"camera topic {camera.topic} of {path} holds no message")
    return camera.topic, camera.msgtype, frames, notes


class NodeProcess:
    """An incident node child process; its output is kept (last lines) for error messages."""

    def __init__(self, bundle: str | Path, namespace: str, task: str, params: dict, workdir: Path) -> None:
        values = {"bundle": str(Path(bundle).resolve()), "robot_id": namespace.strip("/").split("/")[-1],
                  "robot_type": "drone",  # heartbeats only: the analysis does not depend on it
                  "max_rate_hz": 0.0, "default_task": task, "heartbeat_period_s": 1.0,
                  "diagnostics_period_s": 0.5, **params}
        params_file = workdir / "incident_node_params.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
        cmd = [sys.executable, "-m", "ember.ros.incident_node", "--ros-args", "-r", f"__ns:={namespace}",
               "--params-file", str(params_file)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
        self.lines: deque[str] = deque(maxlen=40)
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.strip() == "READY":
                self.ready.set()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.1):
                return
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise LiveError(f"incident node exited with {self.proc.returncode} before it was ready:\n" + self.tail())
        raise LiveError(f"incident node not ready after {timeout:.0f} s:\n" + self.tail())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)


class Collector:
    """Subscribes to a node's IncidentAnalysis and RobotSelection; joins them by header stamp."""

    def __init__(self, node, namespace: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from ember_msgs.msg import IncidentAnalysis, RobotSelection

        from ember.ros.qos import DIAGNOSTICS_QOS, REPORT_QOS

        self.robot_id = namespace.strip("/").split("/")[-1]
        self.counters: tuple[dict, float] | None = None  # the node's latest /diagnostics values
        self.incidents: dict[int, tuple[object, float]] = {}
        self.selections: dict[int, tuple[object, float]] = {}
        self.last_output = 0.0
        self._lock = threading.Lock()
        ns = namespace.rstrip("/")
        self.topics = [f"{ns}/ember/incident", f"{ns}/ember/robot_selection"]
        self.subs = [
            node.create_subscription(IncidentAnalysis, self.topics[0], lambda m: self._on(self.incidents, m), REPORT_QOS),
            node.create_subscription(RobotSelection, self.topics[1], lambda m: self._on(self.selections, m), REPORT_QOS),
        ]
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, DIAGNOSTICS_QOS)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.hardware_id == self.robot_id and status.name.endswith("/incident_node"):
                values = {kv.key: kv.value for kv in status.values}
                with self._lock:
                    self.counters = (values, time.monotonic())

    def counters_after(self, t: float, timeout: float) -> dict | None:
        """The node's frame counters from a /diagnostics message received after monotonic time `t`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.counters is not None and self.counters[1] > t:
                    return dict(self.counters[0])
            time.sleep(0.02)
        return None

    @staticmethod
    def _stamp(msg) -> int:
        return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)

    def _on(self, store: dict, msg) -> None:
        now = time.monotonic()
        with self._lock:
            store[self._stamp(msg)] = (msg, now)
            self.last_output = now

    def matched(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.subs)

    def answered(self) -> set[int]:
        with self._lock:
            return set(self.incidents) & set(self.selections)

    def predictions(self, sent_at: dict[int, float]) -> dict[int, Prediction]:
        out = {}
        with self._lock:
            for stamp in set(self.incidents) & set(self.selections):
                (inc, t_inc), (sel, t_sel) = self.incidents[stamp], self.selections[stamp]
                sent = sent_at.get(stamp)
                out[stamp] = Prediction(
                    list(inc.labels), f32(inc.scores), list(sel.robot_types), f32(sel.scores), float(inc.latency_ms),
                    (max(t_inc, t_sel) - sent) * 1e3 if sent is not None else None,
                )
        return out


def _wait(predicate, timeout: float, alive=lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if not alive():
            return False
        time.sleep(0.01)
    return predicate()


def run_live(
    path: str | Path,
    bundle: str | Path | None,
    task: str,
    topic: str | None = None,
    connect: str | None = None,
    replay_rate: float = 1.0,
    settle_s: float = 5.0,
    node_params: dict | None = None,
    record_to: str | Path | None = None,
    startup_timeout: float = 120.0,
    discovery_timeout: float = 30.0,
    start_delay_s: float = 0.5,
) -> EvalRun:
    """Replay `path` into an incident node (started here unless `connect`) and collect its answers."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ember.bag.record import Recorder
    from ember.bag.replay import Replayer
    from ember.ros import runtime

    cam_topic, cam_type, frames, notes = frame_infos(path, topic)
    stamp_of = {f.bag_time_ns: f.stamp_ns for f in frames}
    namespace = connect or DEFAULT_NAMESPACE
    suffix = "camera/image_raw/compressed" if cam_type.endswith("CompressedImage") else "camera/image_raw"
    target = f"{namespace.rstrip('/')}/{suffix}"
    if connect is None and bundle is None:
        raise LiveError("a live run that starts its own node needs --bundle")
    with tempfile.TemporaryDirectory(prefix="ember-eval-live-") as tmp:
        proc = NodeProcess(bundle, namespace, task, dict(node_params or {}), Path(tmp)) if connect is None else None
        context = rclpy.Context()
        try:
            if proc:
                proc.wait_ready(startup_timeout)
            alive = proc.alive if proc else (lambda: True)
            runtime.init(args=sys.argv[:1], context=context)
            node = rclpy.create_node("ember_eval_live", context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            collector = Collector(node, namespace)
            recorder = Recorder(node, record_to, collector.topics) if record_to else None
            replayer = Replayer(node, path, rate=replay_rate, topics=[cam_topic], remap={cam_topic: target})
            spinner = threading.Thread(target=lambda: _spin(executor), daemon=True)
            spinner.start()
            try:
                ok = _wait(lambda: replayer.wait_for_subscribers(0.05) and collector.matched()
                           and (recorder is None or len(recorder.subscribed) == len(collector.topics)),
                           discovery_timeout, alive)
                if not ok:
                    raise LiveError(f"no incident node answered on {namespace} (camera {target}) within "
                                    f"{discovery_timeout:.0f} s" + (":\n" + proc.tail() if proc else ""))
                before = collector.counters_after(0.0, 3.0)
                # Matching is not symmetric in time: give the node's best-effort camera subscription
                # a moment to match our publisher too, or the first frame may be lost in discovery.
                time.sleep(start_delay_s)
                sent_at: dict[int, float] = {}
                stats = replayer.run(on_publish=lambda _t, bag_t, wall: sent_at.__setitem__(stamp_of.get(bag_t, bag_t), wall))
                decodable = {f.stamp_ns for f in frames if f.error is None}
                _wait_settled(collector, decodable, settle_s, alive)
                if proc and not proc.alive():
                    raise LiveError(f"incident node exited with {proc.proc.returncode} during the run:\n" + proc.tail())
                preds = collector.predictions(sent_at)
                after = collector.counters_after(time.monotonic(), 3.0)
                extra = {
                    "namespace": namespace,
                    "camera_target": target,
                    "launched_node": proc is not None,
                    "replay": {"published": stats.published, "lag_ms": _lag(stats.lag_s), "rate": replay_rate},
                    "dropped_breakdown": _breakdown(stats.published, len(preds), before, after),
                }
                if notes:
                    extra["bag_notes"] = notes
                if recorder is not None:
                    extra["outputs_bag"] = str(record_to)
                    extra["outputs_recorded"] = recorder.close()
            finally:
                if recorder is not None:
                    recorder.close()
                executor.shutdown()
                spinner.join(5)
                node.destroy_node()
                runtime.shutdown(context=context)
        finally:
            if proc:
                proc.stop()
    if not preds:
        raise LiveError(f"the incident node on {namespace} answered none of {len(frames)} frames")
    version = next((m.model_version for m, _ in collector.incidents.values()), "")
    return EvalRun("live", str(path), cam_topic, cam_type, task, frames, preds, model_version=version, extra=extra)


def _spin(executor) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except (ExternalShutdownException, RuntimeError):
        pass


def _wait_settled(collector: Collector, stamps: set[int], settle_s: float, alive) -> None:
    """Until every frame is answered, or no answer came for `settle_s` seconds."""
    start = time.monotonic()
    while alive():
        if stamps <= collector.answered():
            return
        quiet_since = max(collector.last_output, start)
        if time.monotonic() - quiet_since > settle_s:
            return
        time.sleep(0.02)


def _lag(lags: list[float]) -> dict:
    vals = sorted(abs(x) * 1e3 for x in lags) or [0.0]
    return {"max": vals[-1], "p50": vals[len(vals) // 2]}


def _breakdown(published: int, answered: int, before: dict | None, after: dict | None) -> dict | None:
    """Where unanswered frames went, from the node's /diagnostics counters (None without them)."""
    if before is None or after is None:
        return None
    try:
        delta = {k: int(after[k]) - int(before[k]) for k in ("frames_received", "frames_dropped", "frames_malformed",
                                                            "inference_errors")}
    except (KeyError, ValueError):
        return None
    return {
        "published": published,
        "received_by_node": delta["frames_received"],
        "lost_before_node": published - delta["frames_received"],
        "replaced_in_node": delta["frames_dropped"],
        "malformed_in_node": delta["frames_malformed"],
        "inference_errors": delta["inference_errors"],
        "answered": answered,
    }
