"""Fleets beyond one subnet: discovery through a Fast DDS discovery server (fleet.yaml's
`discovery_server`, the ROS_DISCOVERY_SERVER of its processes) instead of multicast, over real
DDS with the server run by the standard `fastdds discovery` tool of the venv."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator

import pytest

from ember.fleet_config import FleetConfigError, dds_environment, load_dict
from tests.fleet.helpers import ROOT, Proc, write_fleet

pytestmark = pytest.mark.ros
VENV_BIN = ROOT / ".venv" / "bin"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def discovery_server(port: int) -> Iterator[Proc]:
    """`fastdds discovery -l 127.0.0.1 -p PORT` as docs/DEPLOYMENT.md runs it (the venv's bin first on PATH)."""
    env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = Proc(["discovery", "-l", "127.0.0.1", "-p", str(port)], env=env, program=str(VENV_BIN / "fastdds"))
    try:
        server.wait_for_line(r"Server started", timeout=30)
        yield server
    finally:
        server.stop()


def submit(task: str, timeout_s: float, env: dict[str, str]) -> tuple[int, str]:
    """`ember-task submit TASK` with this environment: (exit code, output)."""
    proc = Proc(["-m", "ember.ros.operator", "submit", task, "--timeout", str(timeout_s)], env=env)
    try:
        proc.proc.wait(timeout=timeout_s * 3 + 30)
    finally:
        rc = proc.stop()
    return rc, proc.output()


def test_a_fleet_configured_with_a_discovery_server_is_reached_only_through_it(tiny_bundle, tmp_path, shared_data):
    port = free_udp_port()
    address = f"127.0.0.1:{port}"
    cfg = write_fleet(
        tmp_path / "fleet.yaml", tiny_bundle, [("drone_1", "drone")],
        discovery_server=address,
        inference={"max_rate_hz": 5.0},
        cameras={"enabled": True, "images": str(shared_data / "incidents" / "images"), "rate_hz": 5.0},
    )
    with discovery_server(port):
        fleet = Proc(["-m", "ember.ros.fleet", "--config", str(cfg)])
        try:
            fleet.wait_for_line(r"^READY$", timeout=60)
            # the fleet's participants are discovery-server clients: a multicast participant finds nobody
            rc, out = submit("Put out the fire", 5, env={})
            assert rc == 3 and "no fleet manager offers" in out, out
            rc, out = submit("Respond to the incident", 30, env={"ROS_DISCOVERY_SERVER": address})
            # through the server: the manager planned the task on the drone's camera report (the
            # random tiny model may ask for types the one drone is not: then 'failed', exit 1)
            planned = re.match(r"^(ok|failed): task-0001 for inc-\S+ \(.*, 1 reports\)", out)
            assert rc in (0, 1) and planned and (rc == 0) == (planned[1] == "ok"), (out, fleet.output())
        finally:
            rc = fleet.stop()
        assert rc == 0, fleet.output()


def test_discovery_server_setting_is_checked_and_the_environment_wins():
    base = {"bundle": "/b", "robots": [{"id": "drone_1", "type": "drone"}]}
    cfg = load_dict({**base, "discovery_server": " ;10.0.0.2:11811 "})
    assert cfg.discovery_server == ";10.0.0.2:11811"  # server id 1 at 10.0.0.2 (an entry's place is its id)
    assert dds_environment(cfg, {}) == {"ROS_DISCOVERY_SERVER": ";10.0.0.2:11811"}
    assert dds_environment(cfg, {"ROS_DISCOVERY_SERVER": "192.168.1.5:11811"}) == {}
    for ok in ("base-station", "base-station:11811", "[fd00::1]:11811", "TCPv4:10.0.0.1:42100", "10.0.0.1;10.0.0.2"):
        assert load_dict({**base, "discovery_server": ok}).discovery_server == ok
    for bad, message in (("10.0.0.1:99999", r"'10\.0\.0\.1:99999' is not host\[:port\]"),
                         ("10.0.0.1 11811", "is not host"), (";", "names no server"),
                         ("fd00::1:11811", "is not host")):
        with pytest.raises(FleetConfigError, match=rf"<dict>\.discovery_server: .*{message}"):
            load_dict({**base, "discovery_server": bad})
    assert load_dict(base).discovery_server == "" and dds_environment(load_dict(base), {}) == {}
