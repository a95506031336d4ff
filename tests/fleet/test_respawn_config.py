"""fleet.yaml's `respawn` (fleet-wide and per robot): loading, clear errors, `ember-fleet --dry-run`
and what launch/fleet.launch.py gives launch_ros's Node (respawn=, respawn_delay=, and
respawn_max_retries= where the installed launch has it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ember.fleet_config import RespawnConfig, load, load_dict
from tests.fleet.test_fleet_config import base, refusal
from tests.fleet.test_launch_equivalence import launch_actions, launch_standins  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]

EXECUTE_LOCAL_WITH_MAX_RETRIES = '''

class ExecuteLocal:
    def __init__(self, *, respawn=False, respawn_delay=None, respawn_max_retries=-1, **kwargs):
        pass
'''


def respawn_of(data: dict) -> dict[str, RespawnConfig]:
    """fqn -> respawn setting of every node the file describes."""
    return {d.fqn: d.respawn for d in load_dict(data, ".").node_descriptions()}


def test_respawn_is_off_unless_the_fleet_file_turns_it_on():
    assert {r.enabled for r in respawn_of(base()).values()} == {False}


def test_fleet_wide_respawn_with_a_robot_override():
    data = base(respawn={"enabled": True, "delay_s": 1.5, "max_restarts": 3, "window_s": 30})
    data["robots"][1]["respawn"] = False
    data["cameras"] = {"enabled": True, "images": "imgs"}
    got = respawn_of(data)
    on = RespawnConfig(enabled=True, delay_s=1.5, max_restarts=3, window_s=30.0)
    assert got["/fleet_manager"] == got["/drone_1/incident_node"] == got["/drone_1/camera"] == on
    assert got["/dog_1/incident_node"] == got["/dog_1/camera"] == RespawnConfig(enabled=False, delay_s=1.5, max_restarts=3, window_s=30.0)
    # `respawn: true` is the defaults turned on; a robot's mapping changes only what it names
    data = base(respawn=True)
    data["robots"][0]["respawn"] = {"delay_s": 5}
    got = respawn_of(data)
    assert got["/fleet_manager"] == RespawnConfig(enabled=True)
    assert got["/drone_1/incident_node"] == RespawnConfig(enabled=True, delay_s=5.0)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(respawn="yes"), r"respawn: expected true, false or a mapping .*got 'yes'"),
        (lambda d: d.update(respawn={"enabled": "on"}), r"respawn.enabled: expected true or false, got 'on'"),
        (lambda d: d.update(respawn={"delay_s": -1}), r"respawn.delay_s: must be >= 0, got -1"),
        (lambda d: d.update(respawn={"delay_s": "2s"}), r"respawn.delay_s: expected a number, got '2s'"),
        (lambda d: d.update(respawn={"delay_s": float("inf")}), r"respawn.delay_s: expected a finite number"),
        (lambda d: d.update(respawn={"max_restarts": 0}), r"respawn.max_restarts: must be >= 1, got 0"),
        (lambda d: d.update(respawn={"max_restarts": 2.5}), r"respawn.max_restarts: expected an integer"),
        (lambda d: d.update(respawn={"window_s": 0}), r"respawn.window_s: must be > 0, got 0"),
        (lambda d: d.update(respawn={"delay": 1}), r"respawn: unknown key\(s\) delay; allowed: delay_s, enabled"),
        (lambda d: d["robots"][1].update(respawn={"delay_s": -0.5}), r"robots\[1\].respawn.delay_s: must be >= 0"),
        (lambda d: d["robots"][0].update(respawn=[1]), r"robots\[0\].respawn: expected true, false or a mapping"),
    ],
)
def test_a_bad_respawn_setting_is_one_line_naming_the_key(tmp_path, mutate, message):
    data = base()
    mutate(data)
    assert "\n" not in refusal(tmp_path, data, message)


def test_the_repository_fleet_respawns_its_nodes():
    cfg = load(ROOT / "config" / "fleet.yaml")
    assert {d.respawn.enabled for d in cfg.node_descriptions()} == {True}
    assert cfg.respawn.max_restarts >= 1 and cfg.respawn.delay_s > 0


def _dry_run(cfg: Path, *args: str) -> dict[str, dict]:
    res = subprocess.run([sys.executable, "-m", "ember.ros.fleet", "--config", str(cfg), "--dry-run", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return {f"{n['namespace']}/{n['name']}": n["respawn"] for n in json.loads(res.stdout)["nodes"]}


def _launch_node_kwargs(arguments: dict[str, str]) -> dict[str, dict]:
    """fqn -> the keyword arguments launch/fleet.launch.py gives launch_ros's Node."""
    return {
        f"{n.kwargs['namespace']}/{n.kwargs['name']}": n.kwargs
        for n in launch_actions(arguments)
        if type(n).__name__ == "Node"
    }


@pytest.mark.parametrize("max_retries", [False, True], ids=["launch-without-max-retries", "launch-with-max-retries"])
def test_the_launch_file_passes_the_same_respawn_to_launch_ros(launch_standins, tmp_path, max_retries):  # noqa: F811
    """`ros2 launch` respawns what `ember-fleet --mode processes` respawns, with the same delay; the
    bound goes to launch as respawn_max_retries where its launch has that (Jazzy and later); an
    older launch (whose Node would refuse the keyword) gets respawn and respawn_delay only."""
    if max_retries:
        actions = tmp_path / "standins" / "launch" / "actions.py"
        actions.write_text(actions.read_text() + EXECUTE_LOCAL_WITH_MAX_RETRIES)
    (tmp_path / "bundle").mkdir()
    data = base(bundle=str(tmp_path / "bundle"), respawn={"enabled": True, "delay_s": 0.75, "max_restarts": 4})
    data["robots"][1]["respawn"] = False
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text(yaml.safe_dump(data))
    fleet = _dry_run(cfg)
    launch = _launch_node_kwargs({"config": str(cfg), "cameras": "false"})
    assert set(launch) == set(fleet) == {"/fleet_manager", "/drone_1/incident_node", "/dog_1/incident_node"}
    for fqn, kw in launch.items():
        assert kw["respawn"] is fleet[fqn]["enabled"], fqn
        assert kw["respawn_delay"] == fleet[fqn]["delay_s"] == 0.75, fqn
        if max_retries:
            assert kw["respawn_max_retries"] == fleet[fqn]["max_restarts"] == 4, fqn
        else:
            assert "respawn_max_retries" not in kw, fqn
    assert launch["/dog_1/incident_node"]["respawn"] is False and launch["/drone_1/incident_node"]["respawn"] is True


def test_the_restart_bound_counts_only_restarts_within_the_window():
    """A crash loop spends the bound; a node that dies now and then (once an hour) never does."""
    from ember.ros.fleet import RestartBudget

    budget = RestartBudget(RespawnConfig(enabled=True, max_restarts=2, window_s=60.0))
    assert [budget.take(t) for t in (0.0, 1.0, 2.0)] == [1, 2, 0]  # the third exit within 60 s: give up
    hourly = RestartBudget(RespawnConfig(enabled=True, max_restarts=2, window_s=60.0))
    assert [hourly.take(3600.0 * h) for h in range(10)] == [1] * 10
    sliding = RestartBudget(RespawnConfig(enabled=True, max_restarts=2, window_s=60.0))
    assert [sliding.take(t) for t in (0.0, 50.0, 70.0, 100.0)] == [1, 2, 2, 0]
