"""The QoS profiles of every Ember topic, in one place (DESIGN §3).

* cameras: sensor-data QoS (best effort, volatile) with depth 1, so a slow model sees the
  newest frame and nothing queues;
* action plans: reliable + transient-local, so a robot that (re)joins late still gets the
  plans addressed to it, in order (new, updated, cancelled);
* reports, heartbeats, tasks: reliable, volatile, small depth;
* a robot's battery driver: best effort, so reliable and sensor-data (best-effort) drivers match;
* alerts and the fused selection: reliable + transient-local, so a console started later
  still sees what the fleet could not do.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

CAMERA_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
"""Sensor-data QoS with depth 1 (rclpy's qos_profile_sensor_data has depth 5)."""

PLAN_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""ActionPlan on /<robot_id>/ember/action_plan."""

REPORT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""IncidentAnalysis and RobotSelection."""

STATUS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""RobotStatus heartbeats on /fleet/status (every robot publishes there: depth for bursts)."""

BATTERY_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
"""sensor_msgs/BatteryState from the robot's driver (only the newest level matters). A reliable
subscription would not match drivers that publish with sensor-data QoS (best effort)."""

TASK_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""Operator tasks on /fleet/tasks."""

LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=50,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""/fleet/alerts and /fleet/fused_selection."""

DIAGNOSTICS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""/diagnostics (as diagnostic_updater publishes it)."""
