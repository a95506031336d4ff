"""Rolling a new model out to running nodes (own processes, real DDS, real engines on tiny bundles):
a bundle swapped in at the node's `bundle` path is picked up without a restart (by the periodic
stat check, or the `ember/reload_model` / `/fleet/reload_model` service); a bad one never takes the
model away, is reported once and on /diagnostics, and a good one later clears that."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from ember_msgs.msg import IncidentAnalysis
from ember_msgs.srv import SubmitTask
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from ember.engine.robot_selector import SELECTOR_FILE
from ember.ros.conversions import numpy_to_image
from ember.ros.qos import CAMERA_QOS, DIAGNOSTICS_QOS, REPORT_QOS
from tests.fleet.helpers import Diagnostics, fleet_manager_process, node_process
from tests.fleet.rollout import corrupt_file, swap_in, with_version
from tests.ros.helpers import ros_node, spin_until

pytestmark = pytest.mark.ros
V1 = "tiny-random-int8"
V2 = "tiny-random-int8-retrained"
IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory) -> Path:
    """Another real export (other weights) with another model_version: the retrained model."""
    from ember_training.testing import build_tiny_bundle

    out = build_tiny_bundle(tmp_path_factory.mktemp("retrained") / "export", seed=1)
    return with_version(out, out.with_name("bundle"), V2)


class Robot:
    """The test's side of one robot: a camera, its reports, its diagnostics, its reload service."""

    def __init__(self, node, executor, ns: str) -> None:
        self.node, self.executor, self.ns = node, executor, ns
        self.cam = node.create_publisher(Image, f"{ns}/camera/image_raw", CAMERA_QOS)
        self.incidents: list[IncidentAnalysis] = []
        node.create_subscription(IncidentAnalysis, f"{ns}/ember/incident", self.incidents.append, REPORT_QOS)
        self.diag: list[DiagnosticStatus] = []
        name = f"ember/{ns.strip('/')}/incident_node"
        node.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: self.diag.extend(s for s in m.status if s.name == name), DIAGNOSTICS_QOS
        )
        self.reload_client = node.create_client(Trigger, f"{ns}/ember/reload_model")
        self.sec = 1000
        assert spin_until(executor, lambda: self.cam.get_subscription_count() > 0
                          and node.count_publishers(f"{ns}/ember/incident") > 0, 30)

    def analysed_version(self) -> str:
        """The model_version of the report on one new frame."""
        self.sec += 1
        sec = self.sec
        for _ in range(10):  # camera QoS is best effort: send again until this frame's report comes
            self.cam.publish(numpy_to_image(IMAGE, "rgb8", header=Header(frame_id="cam", stamp=_stamp(sec))))
            if spin_until(self.executor, lambda: any(m.header.stamp.sec == sec for m in self.incidents), 5):
                return next(m for m in self.incidents if m.header.stamp.sec == sec).model_version
        raise AssertionError(f"no report for frame {sec}")

    def fresh_diagnostics(self, count: int = 1) -> DiagnosticStatus:
        """The `count`-th diagnostics status published from now on."""
        n = len(self.diag)
        assert spin_until(self.executor, lambda: len(self.diag) >= n + count, 20), "no diagnostics"
        return self.diag[-1]

    def reload(self) -> Trigger.Response:
        assert spin_until(self.executor, self.reload_client.service_is_ready, 20), "no reload_model service"
        future = self.reload_client.call_async(Trigger.Request())
        assert spin_until(self.executor, future.done, 60), "reload_model did not answer"
        return future.result()


def _stamp(sec: int):
    h = Header()
    h.stamp.sec = sec
    return h.stamp


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _robot_params(bundle: Path, robot_id: str, period: float) -> dict:
    return {"robot_id": robot_id, "robot_type": "drone", "bundle": str(bundle), "max_rate_hz": 0.0,
            "diagnostics_period_s": 0.3, "bundle_check_period_s": period,
            "camera_silence_warn_s": 0.0}  # no camera: it analyses through its service (the level is the reload's)


def test_a_swapped_in_bundle_serves_without_a_restart_and_a_bad_one_never_takes_the_model_away(
    tiny_bundle, retrained, tmp_path
):
    live = shutil.copytree(tiny_bundle, tmp_path / "robot" / "bundle")
    params = _robot_params(live, "roll_bot", 0.2)
    with node_process("ember.ros.incident_node", "/roll_bot/incident_node", params, tmp_path) as proc, \
            ros_node("rollout_user") as (node, executor):
        robot = Robot(node, executor, "/roll_bot")
        assert robot.analysed_version() == V1

        swap_in(retrained, live)  # the rollout: copied beside, swapped in atomically
        proc.wait_for_line(rf"model reloaded: {V1} -> {V2}", timeout=60)
        assert robot.analysed_version() == V2
        assert spin_until(executor, lambda: robot.diag and _values(robot.diag[-1])["model_version"] == V2, 20), robot.diag
        assert robot.diag[-1].level == DiagnosticStatus.OK, robot.diag[-1]

        bad = shutil.copytree(retrained, tmp_path / "bad")  # a copy error on the way to the robot
        corrupt_file(bad)
        swap_in(bad, live)
        proc.wait_for_line(r"model reload failed: .*sha256 mismatch for decoder.onnx.*\(still running " + V2, timeout=60)
        assert spin_until(executor, lambda: robot.diag[-1].level == DiagnosticStatus.WARN, 20), robot.diag[-1]
        status = robot.diag[-1]
        assert "model reload failed" in status.message and "sha256 mismatch" in status.message, status
        assert _values(status)["model_version"] == V2
        assert robot.analysed_version() == V2, "the old model keeps serving"
        robot.fresh_diagnostics(count=6)  # >= 1.8 s: about 9 check periods
        failures = [ln for ln in proc.lines if "model reload failed" in ln]
        assert len(failures) == 1, f"an unchanged bad bundle is reported once, not every period: {failures}"

        answer = robot.reload()  # the operator asks: same bundle, same refusal, the model stays
        assert not answer.success and "sha256 mismatch" in answer.message and V2 in answer.message, answer

        swap_in(tiny_bundle, live)  # a good bundle again clears the warning
        proc.wait_for_line(rf"model reloaded: {V2} -> {V1}", timeout=60)
        assert spin_until(executor, lambda: robot.diag and robot.diag[-1].level == DiagnosticStatus.OK
                          and _values(robot.diag[-1])["model_version"] == V1, 20), robot.diag[-1]
        assert robot.analysed_version() == V1


def test_with_the_check_off_the_reload_service_loads_the_new_bundle(tiny_bundle, retrained, tmp_path):
    live = shutil.copytree(tiny_bundle, tmp_path / "robot" / "bundle")
    params = _robot_params(live, "svc_bot", 0.0)
    with node_process("ember.ros.incident_node", "/svc_bot/incident_node", params, tmp_path) as proc, \
            ros_node("rollout_service_user") as (node, executor):
        robot = Robot(node, executor, "/svc_bot")
        swap_in(retrained, live)
        status = robot.fresh_diagnostics(count=4)
        assert _values(status)["model_version"] == V1, "bundle_check_period_s 0: no automatic reload"
        assert robot.analysed_version() == V1
        answer = robot.reload()
        assert answer.success and f"{V1} -> {V2}" in answer.message, answer
        assert robot.analysed_version() == V2
        assert sum("model reloaded" in ln for ln in proc.lines) == 1, proc.output()


MANAGER_DIAG = "ember/fleet_manager"


class Manager:
    """The operator's side of the fleet manager: SubmitTask, its reload service, its diagnostics."""

    def __init__(self, node, executor) -> None:
        self.node, self.executor = node, executor
        self.submit = node.create_client(SubmitTask, "/fleet/submit_task")
        self.reload_client = node.create_client(Trigger, "/fleet/reload_model")
        self.diag = Diagnostics(node)

    def selector(self) -> str:
        """The text_selector state of the next diagnostics message."""
        return self.diag.fresh(self.executor, MANAGER_DIAG)["text_selector"]

    def basis(self, task: str) -> str:
        """What decided the task's robot types (no robot is online: the task is decided, not assigned)."""
        assert spin_until(self.executor, self.submit.service_is_ready, 20)
        future = self.submit.call_async(SubmitTask.Request(task=task))
        assert spin_until(self.executor, future.done, 30)
        message = future.result().message
        return "text selector" if "(text selector)" in message else message

    def reload(self) -> Trigger.Response:
        assert spin_until(self.executor, self.reload_client.service_is_ready, 20), "no /fleet/reload_model service"
        future = self.reload_client.call_async(Trigger.Request())
        assert spin_until(self.executor, future.done, 60)
        return future.result()


def test_the_fleet_manager_reloads_its_text_robot_selector_and_keeps_it_when_the_new_one_is_bad(
    selector_bundle, tmp_path
):
    bundle, _, task = selector_bundle
    live = shutil.copytree(bundle, tmp_path / "base" / "bundle")
    retrained = with_version(bundle, tmp_path / "retrained", V2)
    params = {"heartbeat_timeout_s": 3.0, "diagnostics_period_s": 0.3, "task_wait_s": 0.5, "bundle": str(live),
              "bundle_check_period_s": 0.2}
    with fleet_manager_process(tmp_path, params) as proc, ros_node("rollout_operator") as (node, executor):
        manager = Manager(node, executor)
        assert manager.selector().startswith("on") and manager.basis(task) == "text selector"

        swap_in(retrained, live)
        proc.wait_for_line(rf"text robot selector reloaded: {V1} -> {V2}", timeout=60)
        assert spin_until(executor, lambda: V2 in manager.selector(), 20)

        bad = shutil.copytree(retrained, tmp_path / "bad")
        corrupt_file(bad, SELECTOR_FILE)
        swap_in(bad, live)
        proc.wait_for_line(r"text robot selector reload failed: .*sha256 mismatch for robot_selector.npz", timeout=60)
        assert spin_until(executor, lambda: manager.selector().startswith("error"), 20)  # diagnostics WARN
        state = manager.selector()
        assert state.startswith("error") and "sha256 mismatch" in state and V2 in state, state
        assert manager.basis(task) == "text selector", "the old selector keeps deciding text tasks"
        manager.diag.fresh(executor, MANAGER_DIAG)
        manager.diag.fresh(executor, MANAGER_DIAG)  # several check periods
        assert sum("reload failed" in ln for ln in proc.lines) == 1, proc.output()
        answer = manager.reload()
        assert not answer.success and "sha256 mismatch" in answer.message, answer

        swap_in(bundle, live)
        proc.wait_for_line(rf"text robot selector reloaded: {V2} -> {V1}", timeout=60)
        assert spin_until(executor, lambda: manager.selector().startswith("on"), 20)
        answer = manager.reload()
        assert answer.success and V1 in answer.message, answer
