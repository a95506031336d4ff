"""`ember-eval` on awkward inputs: shared header stamps, several cameras, unusable output paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ember.bag.ground_truth import GroundTruth
from ember.bag.io import create_writer, reliable_qos
from tests.bag.helpers import KILTED, START_NS, cli, labelled_image_bag

T = KILTED.types


def _camera_bag(path: Path, cameras: dict[str, list[tuple[int, list[str]]]], with_truth: bool = True) -> None:
    """Image bag: per camera topic, frames as (header stamp ns, gold incidents), with ground truth
    naming that topic; bag times strictly increasing in writing order."""
    rng = np.random.default_rng(3)
    writer = create_writer(path, "mcap")
    gt = writer.add_connection("/ember/ground_truth", "std_msgs/msg/String", typestore=KILTED,
                               offered_qos_profiles=[reliable_qos()])
    t = START_NS
    for topic, frames in cameras.items():
        cam = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=KILTED, offered_qos_profiles=[reliable_qos()])
        for stamp, incidents in frames:
            header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                                                      nanosec=stamp % 10**9), frame_id=topic)
            rgb = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
            img = T["sensor_msgs/msg/Image"](header=header, height=32, width=40, encoding="rgb8", is_bigendian=0,
                                             step=120, data=rgb.reshape(-1))
            writer.write(cam, t, KILTED.serialize_cdr(img, "sensor_msgs/msg/Image"))
            if not with_truth:
                t += 100_000_000
                continue
            truth = GroundTruth(stamp_ns=stamp, source=f"{topic}@{stamp}", image_topic=topic, incidents=incidents,
                                robot_types=["drone"])
            writer.write(gt, t, KILTED.serialize_cdr(T["std_msgs/msg/String"](data=truth.to_json()), "std_msgs/msg/String"))
            t += 100_000_000
    writer.close()


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("with_truth", [True, False])
def test_frames_sharing_a_header_stamp_are_an_error_not_one_answer_for_all(tmp_path, tiny_bundle, with_truth):
    # a camera driver that never stamps: every header stamp is zero
    _camera_bag(tmp_path / "zero", {"/camera/image_raw": [(0, ["on fire"]), (0, ["flooded"]), (0, ["collapsed"])]},
                with_truth=with_truth)
    out = tmp_path / "report"
    res = cli("eval", "bag", "--bag", tmp_path / "zero", "--bundle", tiny_bundle, "--out", out)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith("ember-eval: error: ") and str(tmp_path / "zero") in first, first
    assert "/camera/image_raw" in first and "stamp" in first and "zero" in first, first
    assert _report(out)["complete"] is False


def test_ground_truth_is_taken_from_the_evaluated_camera(tmp_path, tiny_bundle):
    # stereo pair: both cameras stamped alike, each frame with its own ground truth
    stamps = [START_NS + k * 250_000_000 for k in range(3)]
    _camera_bag(tmp_path / "stereo", {
        "/left/image_raw": [(s, ["on fire"]) for s in stamps],
        "/right/image_raw": [(s, ["flooded"]) for s in stamps],
    })
    out = tmp_path / "report"
    res = cli("eval", "bag", "--bag", tmp_path / "stereo", "--bundle", tiny_bundle, "--out", out,
              "--topic", "/left/image_raw")
    assert res.returncode == 0, res.stderr
    rows = _report(out)["per_frame"]
    assert [r["gold_incidents"] for r in rows] == [["on fire"]] * 3
    assert [r["source"] for r in rows] == [f"/left/image_raw@{s}" for s in stamps]


def test_an_unusable_report_directory_fails_before_the_run(tmp_path, tiny_bundle):
    labelled_image_bag(tmp_path / "bag", "mcap", n=2)
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        res = cli("eval", "bag", "--bag", tmp_path / "bag", "--bundle", tiny_bundle, "--out", out)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip().splitlines() == [res.stderr.strip()] and str(out) in res.stderr, res.stderr
        assert res.stderr.startswith("ember-eval: error: ") and "offline:" not in res.stdout
    assert (tmp_path / "afile").read_text() == "x"


def test_an_unusable_json_path_fails_before_the_robot_selection_run(tmp_path, tiny_bundle):
    data = tmp_path / "rs.json"
    data.write_text(json.dumps([{"instruction": "", "input": "Task: Put out the fire.", "output": "Drone"}]))
    (tmp_path / "afile").write_text("x")
    for target in (tmp_path, tmp_path / "afile" / "out.json"):
        res = cli("eval", "robot-selection", "--bundle", tiny_bundle, "--data", data, "--json", target)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith("ember-eval: error: ") and str(target) in res.stderr, res.stderr
        assert "exact_match" not in res.stdout, "the evaluation must not run only to lose its result"


def test_ground_truth_with_unknown_labels_names_the_bag_and_the_frame(tmp_path, tiny_bundle):
    _camera_bag(tmp_path / "bag", {"/camera/image_raw": [(START_NS, ["on fire"]), (START_NS + 10**8, ["alien invasion"])]})
    out = tmp_path / "report"
    res = cli("eval", "bag", "--bag", tmp_path / "bag", "--bundle", tiny_bundle, "--out", out)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    first = res.stderr.splitlines()[0]
    assert str(tmp_path / "bag") in first and "'alien invasion'" in first, first
    assert f"/camera/image_raw@{START_NS + 10**8}" in first, first  # the frame's source
    assert _report(out)["complete"] is False
