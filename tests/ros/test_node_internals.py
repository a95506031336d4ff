"""Our Node subclasses must not assign attributes that rclpy.Node keeps for itself: the fleet
manager once kept its AnalyzeImage clients in `self._clients`, rclpy's own list of the node's
clients, and its executor crashed on the first SubmitTask with an image."""

from __future__ import annotations

import inspect
import re

import pytest

from ember.ros.camera import CameraNode
from ember.ros.fleet_manager import FleetManager
from ember.ros.incident_node import IncidentNode
from ember.ros.sim import SimulatedRobots
from tests.ros.helpers import ros_node

pytestmark = pytest.mark.ros
OUR_NODES = (CameraNode, FleetManager, IncidentNode, SimulatedRobots)
ASSIGNED = re.compile(r"self\.(_\w+)\s*(?::[^=\n]+)?=[^=]")


def test_our_nodes_leave_rclpy_node_internals_alone():
    with ros_node("internals_probe") as (node, _):
        internals = {name for name in vars(node) if name.startswith("_")}
    assert {"_clients", "_publishers", "_timers"} <= internals  # what rclpy keeps (sanity of the probe)
    for cls in OUR_NODES:
        assigned = set(ASSIGNED.findall(inspect.getsource(cls)))
        assert assigned, cls
        assert not assigned & internals, f"{cls.__name__} overwrites rclpy.Node's {sorted(assigned & internals)}"
