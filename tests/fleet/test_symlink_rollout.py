"""A model rollout in the symlink layout many deploy with (`current -> releases/v1`, the operator flips
it: `ln -sfn releases/v2 current`): the nodes that ember-fleet (and fleet.launch.py) start from a fleet
file whose `bundle` is that link must follow the link, not the release it pointed to at start."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ember import fleet_config
from tests.fleet.helpers import Proc, write_fleet
from tests.fleet.rollout import with_version

V1 = "tiny-random-int8"
V2 = "tiny-random-int8-v2"


def _releases(tiny_bundle, tmp_path):
    base = tmp_path / "opt"
    shutil.copytree(tiny_bundle, base / "releases" / "v1")
    with_version(tiny_bundle, base / "releases" / "v2", V2)
    (base / "current").symlink_to("releases/v1")
    return base / "current"


def test_the_fleet_file_keeps_a_symlinked_bundle_path(tiny_bundle, tmp_path):
    """fleet.yaml's `bundle` (absolute, relative to the file, or the --bundle / bundle:= override) is
    the link itself in every node's parameters; resolving it pinned the nodes to releases/v1."""
    current = _releases(tiny_bundle, tmp_path)
    robots = [{"id": "drone_1", "type": "drone"}]
    (tmp_path / "opt" / "fleet.yaml").write_text("bundle: current\nrobots:\n  - {id: drone_1, type: drone}\n")
    configs = {
        "absolute": fleet_config.load_dict({"bundle": str(current), "robots": robots}, tmp_path),
        "relative to the file": fleet_config.load(tmp_path / "opt" / "fleet.yaml"),
        "override": fleet_config.load_dict({"bundle": "elsewhere", "robots": robots}, tmp_path, bundle=str(current)),
    }
    for how, cfg in configs.items():
        node = fleet_config.incident_node_description(cfg, cfg.robots[0])
        manager = fleet_config.manager_description(cfg)
        assert (cfg.bundle, node.parameters["bundle"], manager.parameters["bundle"]) == (str(current),) * 3, how


@pytest.mark.ros
def test_an_incident_node_started_by_ember_fleet_follows_a_flipped_symlink(tiny_bundle, tmp_path):
    current = _releases(tiny_bundle, tmp_path)
    cfg = write_fleet(tmp_path / "fleet.yaml", current, [("drone_1", "drone")],
                      inference={"max_rate_hz": 0.0, "bundle_check_period_s": 0.2})
    proc = Proc(["-m", "ember.ros.fleet", "--config", str(cfg), "--mode", "processes", "--no-manager", "--no-cameras"])
    try:
        proc.wait_for_line(r"^READY$", timeout=90)
        subprocess.run(["ln", "-sfn", "releases/v2", "current"], cwd=current.parent, check=True)  # as an operator does
        proc.wait_for_line(rf"model reloaded: {V1} -> {V2} \({current}\)", timeout=30)
    finally:
        rc = proc.stop()
    assert rc == 0, proc.output()
    assert os.readlink(current) == "releases/v2"
