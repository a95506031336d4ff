"""Sample ember_msgs messages with every field set to a non-default value, and a deep comparison."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from ember_msgs.msg import ActionPlan, ActionStep, IncidentAnalysis, RobotSelection, RobotStatus
from std_msgs.msg import Header


def _header(frame: str, sec: int, nanosec: int) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame)


def sample_messages() -> dict[str, object]:
    """One fully populated message of each ember_msgs type, keyed by type name."""
    steps = [
        ActionStep(order=1, description="Survey the area from above", robot_type="drone", robot_id="drone_1"),
        ActionStep(order=2, description="Carry supplies over rubble", robot_type="legged", robot_id="dog_2"),
        ActionStep(order=2, description="Open the door", robot_type="humanoid", robot_id="hum_1"),
    ]
    return {
        "IncidentAnalysis": IncidentAnalysis(
            header=_header("cam_front", 1_700_000_123, 456_789_012),
            robot_id="drone_1",
            incident_type="on fire",
            confidence=0.75,
            labels=["on fire", "with smoke", "burned"],
            scores=[0.75, 0.5, 0.25],
            place="forest",
            description="Flames and smoke over a forest ridge.",
            model_version="ember-0.1.0+abc",
            latency_ms=123.5,
        ),
        "RobotSelection": RobotSelection(
            header=_header("cam_rear", 42, 999_999_999),
            robot_id="wheel_3",
            task="Deliver water to the shelter",
            robot_types=["wheeled", "drone"],
            scores=np.array([0.5, 0.125, 0.875, 0.25, 0.0625], dtype=np.float32),
            confidence=0.625,
            reasoning="Flat road; heavy payload -> wheels.",
        ),
        "ActionStep": steps[0],
        "ActionPlan": ActionPlan(
            header=_header("map", 7, 8),
            plan_id="plan-0007",
            incident_id="inc-0003",
            robot_id="dog_2",
            steps=steps,
            status=ActionPlan.STATUS_UPDATED,
        ),
        "RobotStatus": RobotStatus(
            header=_header("base_link", 100, 200),
            robot_id="hum_1",
            robot_type="humanoid",
            available=True,
            battery=0.375,
            current_plan_id="plan-0007",
        ),
    }


def message_types() -> dict[str, type]:
    return {name: type(msg) for name, msg in sample_messages().items()}


def to_plain(msg) -> object:
    """A message as nested plain Python (dicts, lists, floats) for field-by-field comparison."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {field: to_plain(getattr(msg, field)) for field in msg.get_fields_and_field_types()}
    if isinstance(msg, np.ndarray):
        return [to_plain(x) for x in msg.tolist()]
    if isinstance(msg, (list, tuple)):
        return [to_plain(x) for x in msg]
    return msg
