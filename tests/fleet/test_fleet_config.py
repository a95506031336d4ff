"""config/fleet.yaml -> ember.fleet_config: the real file, path resolution and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ember.fleet_config import FleetConfigError, load, load_dict
from ember.labels import ROBOT_TYPES

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "fleet.yaml"


def base(**top) -> dict:
    """A valid fleet file of two robots (and the `top` sections given)."""
    return {
        "bundle": "bundle",
        "robots": [{"id": "drone_1", "type": "drone"}, {"id": "dog_1", "type": "legged"}],
        **top,
    }


def refusal(tmp_path: Path, data: dict, message: str) -> str:
    """The FleetConfigError that loading `data` from a file raises: it matches `message` and names the file."""
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FleetConfigError, match=message) as err:
        load(path)
    assert str(path) in str(err.value)
    return str(err.value)


def test_the_repository_fleet_has_one_robot_of_each_type_and_resolves_paths(shared_data):
    cfg = load(CONFIG)
    assert sorted(r.type for r in cfg.robots) == sorted(ROBOT_TYPES)
    assert cfg.bundle == str((ROOT / "build" / "bundle").resolve())
    assert Path(cfg.cameras.images) == shared_data / "incidents" / "images"  # absolute, a symlinked ../shared kept
    names = [d.fqn for d in cfg.node_descriptions()]
    assert names[0] == "/fleet_manager"
    assert "/drone_1/incident_node" in names and "/drone_1/camera" in names
    assert len(names) == 1 + 2 * len(cfg.robots)


def test_bundle_override_and_per_robot_inference_override(tmp_path):
    data = base()
    data["inference"] = {"max_rate_hz": 2, "processing_delay_s": 0.1}
    data["robots"][1]["inference"] = {"processing_delay_s": 0.5}
    cfg = load_dict(data, tmp_path, bundle=str(tmp_path / "b"))
    assert cfg.bundle == str((tmp_path / "b").resolve())
    d1, d2 = (d for d in cfg.node_descriptions() if d.executable == "incident_node")
    assert d1.parameters["processing_delay_s"] == 0.1 and d2.parameters["processing_delay_s"] == 0.5
    # an int in YAML becomes the float the ROS parameter is declared as
    assert d2.parameters["max_rate_hz"] == 2.0 and isinstance(d2.parameters["max_rate_hz"], float)
    assert d2.namespace == "/dog_1" and d2.parameters["robot_id"] == "dog_1"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(robotz=[]), r"unknown key\(s\) robotz"),
        (lambda d: d["robots"][0].update(colour="red"), r"robots\[0\]: unknown key\(s\) colour"),
        (lambda d: d.update(manager={"weights": {"speed": 1}}), r"manager.weights: unknown key\(s\) speed"),
        (lambda d: d.update(inference={"thread": 2}), r"inference: unknown key\(s\) thread"),
        (lambda d: d["robots"][1].update(type="boat"), r"robots\[1\].type: unknown robot type 'boat'.*drone, humanoid"),
        (lambda d: d["robots"][1].update(id="drone_1"), r"robots\[1\].id: duplicate robot id 'drone_1' \(also robots\[0\]\)"),
        (lambda d: d["robots"][0].update(id="drone-1"), r"not a valid robot id"),
        (lambda d: d["robots"][0].pop("type"), r"robots\[0\]: missing key 'type'"),
        (lambda d: d.pop("bundle"), r"missing key 'bundle'"),
        (lambda d: d.update(robots=[]), r"robots: expected a non-empty list"),
        (lambda d: d.update(manager={"low_battery": "low"}), r"manager.low_battery: expected a number"),
        (lambda d: d.update(manager={"low_battery": 1.5}), r"manager.low_battery: must be within 0..1"),
        (lambda d: d.update(manager={"battery_hysteresis": -0.1}), r"manager.battery_hysteresis: must be >= 0"),
        (lambda d: d.update(manager={"share_window_s": -1}), r"manager.share_window_s: must be >= 0"),
        (lambda d: d.update(inference={"threads": True}), r"inference.threads: expected an integer"),
        (lambda d: d.update(cameras={"enabled": True}), r"cameras: give exactly one of images"),
        (lambda d: d.update(cameras={"format": "h264"}), r"cameras.format: expected raw or jpeg"),
    ],
)
def test_bad_configs_are_refused_with_the_offending_key(tmp_path, mutate, message):
    data = base()
    mutate(data)
    refusal(tmp_path, data, message)


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("robots: [unclosed\n")
    with pytest.raises(FleetConfigError, match="not valid YAML"):
        load(path)
    with pytest.raises(FleetConfigError, match="does not exist"):
        load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("manager", "heartbeat_timeout_s", ".nan"),  # robots would never go offline
        ("manager", "task_wait_s", ".inf"),  # a SubmitTask call would raise in the manager
        ("manager", "fusion_window_s", ".nan"),
        ("inference", "heartbeat_period_s", ".nan"),  # the incident node's timer cannot be made
        ("inference", "max_rate_hz", ".inf"),
        ("cameras", "rate_hz", ".nan"),
    ],
)
def test_non_finite_numbers_are_refused_with_the_offending_key(tmp_path, section, key, value):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(base()) + f"{section}:\n  {key}: {value}\n")
    with pytest.raises(FleetConfigError, match=rf"{section}.{key}: expected a finite number"):
        load(path)


def test_a_non_finite_weight_is_refused(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(base()) + "manager:\n  weights:\n    load: .nan\n")
    with pytest.raises(FleetConfigError, match=r"manager.weights.load: expected a finite number"):
        load(path)


def test_the_compressed_topic_follows_the_camera_topic_unless_given():
    """A robot with camera_topic front/image_color listened for compressed frames on
    camera/image_raw/compressed, where its camera driver publishes nothing."""
    cfg = load_dict({"bundle": "/b", "robots": [
        {"id": "a", "type": "drone", "camera_topic": "front/image_color"},
        {"id": "b", "type": "drone", "camera_topic": "front/image_color", "compressed_topic": "front/jpeg"},
        {"id": "c", "type": "drone"},
    ]})
    assert [r.compressed_topic for r in cfg.robots] == ["front/image_color/compressed", "front/jpeg",
                                                         "camera/image_raw/compressed"]
