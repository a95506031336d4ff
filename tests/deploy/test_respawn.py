"""A packaged robot honours fleet.yaml's `respawn`: run.sh's supervisor around `ros2 run` / `docker run`.

The ROS 2 CLI (and the docker CLI) are not installed here, so a stand-in for them goes first on PATH:
a real program that, like `ros2 run`, starts the "node" as its child process and ends with the node's
exit code. What each run does comes from a plan (an exit code, `run` until stopped, `stubborn`: the node
ignores SIGTERM and outlives the CLI). run.sh itself, its signals and the processes are all real.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ember.deploy.package import build_package
from ember.fleet_config import load as load_fleet
from tests.deploy.conftest import FLEET
from tests.fleet.helpers import alive

FAKE_CLI = '''#!{python}
"""Stand-in for `ros2` / `docker`: start the node as a child, end with its exit code (see test_respawn)."""
import os, signal, subprocess, sys, time
from pathlib import Path

log = Path(os.environ["FAKE_LOG"])
n = 1 + sum(1 for line in log.read_text().splitlines() if line.startswith("start")) if log.exists() else 1
plan = os.environ["FAKE_PLAN"].split()
action = plan[min(n, len(plan)) - 1]
if action == "run":
    node = subprocess.Popen(["sleep", "600"])
elif action == "stubborn":
    def deaf():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
    node = subprocess.Popen(["sleep", "600"], preexec_fn=deaf)
else:
    node = subprocess.Popen(["sh", "-c", "exit " + action])
with log.open("a") as f:
    f.write(f"start {{n}} {{os.getpid()}} {{node.pid}} {{time.monotonic()}} {{os.path.basename(sys.argv[0])}} "
            f"{{' '.join(a.replace(' ', '_') for a in sys.argv[1:])}}\\n")
print(f"FAKE-CLI run {{n}} started: {{action}}", file=sys.stderr, flush=True)
try:
    code = node.wait()
except KeyboardInterrupt:  # like ros2 run: the node got the same SIGINT; wait for it
    code = node.wait()
with log.open("a") as f:
    f.write(f"end {{n}} {{code}} {{time.monotonic()}}\\n")
sys.exit(code if code >= 0 else 128 - code)
'''


class RunSh:
    """`run.sh MODE` of a package as a real process, its stderr read line by line."""

    def __init__(self, pkg: Path, tmp: Path, plan: str, mode: str = "ros", **env: str) -> None:
        self.log = tmp / "cli.log"
        bindir = tmp / "bin"
        bindir.mkdir(exist_ok=True)
        fake = bindir / "ros2"
        fake.write_text(FAKE_CLI.format(python=sys.executable))
        fake.chmod(0o755)
        if not (bindir / "docker").exists():
            (bindir / "docker").symlink_to(fake)
        # EMBER_STOP_TIMEOUT_S: no SIGKILL of leftovers rescues a test that expects a clean stop
        full_env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_LOG": str(self.log),
                    "FAKE_PLAN": plan, "EMBER_STOP_TIMEOUT_S": "600", **env}
        self.proc = subprocess.Popen(["bash", str(pkg / "run.sh"), mode], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=full_env, cwd=tmp)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        """The next stderr line that matches `pattern` (a regex)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"run.sh ended (rc={self.proc.wait()}) before {pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def finish(self, timeout: float = 30.0) -> int:
        """run.sh's exit code, once it and its stderr have ended."""
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    def runs(self) -> list[dict]:
        """Each start of the stand-in CLI: its pid, its node's pid, start/end times and exit code."""
        out: dict[int, dict] = {}
        for line in self.log.read_text().splitlines() if self.log.exists() else []:
            kind, n, *rest = line.split()
            if kind == "start":
                out[int(n)] = {"pid": int(rest[0]), "node": int(rest[1]), "start": float(rest[2]), "argv0": rest[3],
                               "args": rest[4:]}
            else:
                out[int(n)].update(code=int(rest[0]), end=float(rest[1]))
        return [out[k] for k in sorted(out)]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for run in self.runs():
            for pid in (run["pid"], run["node"]):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _fleet_file(tmp: Path, tiny_bundle: Path, respawn, robot_respawn=None) -> Path:
    cfg = yaml.safe_load(FLEET.read_text())
    cfg["bundle"] = str(tiny_bundle)
    cfg["cameras"]["images"] = str(FLEET.parent / cfg["cameras"]["images"])
    cfg.pop("dds_profile", None)
    cfg["respawn"] = respawn
    if robot_respawn is not None:
        next(r for r in cfg["robots"] if r["id"] == "drone_1")["respawn"] = robot_respawn
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def package(tiny_bundle: Path, tmp_path_factory) -> Path:
    """drone_1's package from a fleet.yaml with respawn on: delay 0.2 s, at most 2 restarts within 60 s."""
    tmp = tmp_path_factory.mktemp("respawn")
    fleet = _fleet_file(tmp, tiny_bundle, {"enabled": True, "delay_s": 0.2, "max_restarts": 2, "window_s": 60})
    return build_package(tiny_bundle, tmp / "drone_1", fleet, robot_id="drone_1").path


@pytest.fixture
def run_sh(package: Path, tmp_path: Path):
    started: list[RunSh] = []

    def start(plan: str, mode: str = "ros", **env: str) -> RunSh:
        started.append(RunSh(package, tmp_path, plan, mode, **env))
        return started[-1]

    yield start
    for r in started:
        r.kill()


def _env_values(pkg: Path) -> dict[str, str]:
    lines = [line for line in (pkg / "robot.env").read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_robot_env_carries_the_robots_own_respawn(tiny_bundle: Path, tmp_path: Path):
    """The robot's effective respawn (fleet-wide, with its own override) reaches robot.env."""
    fleet = _fleet_file(tmp_path, tiny_bundle, {"enabled": True, "delay_s": 2.0, "max_restarts": 5, "window_s": 60.0},
                        robot_respawn={"delay_s": 0.25, "window_s": 90})
    pkg = build_package(tiny_bundle, tmp_path / "drone_1", fleet, robot_id="drone_1").path
    expected = load_fleet(fleet, bundle=str(tiny_bundle)).robot("drone_1").respawn
    assert (expected.delay_s, expected.max_restarts, expected.window_s) == (0.25, 5, 90.0)
    values = _env_values(pkg)
    assert {k: v for k, v in values.items() if k.startswith("EMBER_RESPAWN")} == {
        "EMBER_RESPAWN": "1", "EMBER_RESPAWN_DELAY_S": "0.25", "EMBER_RESPAWN_MAX_RESTARTS": "5",
        "EMBER_RESPAWN_WINDOW_S": "90",
    }
    off = _fleet_file(tmp_path, tiny_bundle, True, robot_respawn=False)
    pkg_off = build_package(tiny_bundle, tmp_path / "off", off, robot_id="drone_1").path
    assert _env_values(pkg_off)["EMBER_RESPAWN"] == "0"


def test_a_crash_loop_is_given_up_with_the_packaged_bound(run_sh):
    """Exit 3 again and again: restarted after the delay, twice (robot.env: max_restarts 2), then one line and
    the node's exit code, for systemd or docker to take over."""
    r = run_sh("3")
    assert r.finish() == 3, "\n".join(r.lines)
    runs = r.runs()
    assert len(runs) == 3 and all(run["code"] == 3 for run in runs)
    for before, after in zip(runs, runs[1:], strict=False):
        assert after["start"] - before["end"] >= 0.2, "respawned before respawn.delay_s"
    text = "\n".join(r.lines)
    assert "run.sh: incident_node of drone_1 exited with code 3; respawning in 0.2s (restart 1 of at most 2 within 60s)" \
        in text
    assert "(restart 2 of at most 2 within 60s)" in text
    give_up = [line for line in r.lines if "giving up" in line]
    assert give_up == ["run.sh: incident_node of drone_1 exited 3 times within 60s (respawn.max_restarts 2); giving up"]
    assert not any(alive(run["node"]) or alive(run["pid"]) for run in runs)


def test_a_node_that_fails_once_comes_back_and_stops_cleanly(run_sh):
    r = run_sh("1 run")
    r.wait_for(r"respawning in 0\.2s \(restart 1 of at most 2")
    r.wait_for("FAKE-CLI run 2 started")
    r.proc.send_signal(signal.SIGTERM)
    assert r.finish() == 0, "\n".join(r.lines)
    runs = r.runs()
    assert len(runs) == 2 and runs[0]["code"] == 1
    assert not any(alive(run["node"]) or alive(run["pid"]) for run in runs), "the node outlived run.sh"


def test_exit_zero_is_a_clean_stop(run_sh):
    r = run_sh("0")
    assert r.finish() == 0
    assert len(r.runs()) == 1
    assert "run.sh: incident_node of drone_1 finished (exit code 0): not respawned" in r.lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_during_the_node_stops_it_and_its_children(run_sh, sig):
    r = run_sh("run")
    r.wait_for("FAKE-CLI run 1 started")
    r.proc.send_signal(sig)
    assert r.finish() == 0, "\n".join(r.lines)
    (run,) = r.runs()
    assert not alive(run["pid"]) and not alive(run["node"]), "ros2 run or its node outlived run.sh"
    assert not any("respawning" in line or "still running" in line for line in r.lines), r.lines


def test_a_stop_signal_during_the_delay_does_not_start_it_again(run_sh):
    r = run_sh("1", EMBER_RESPAWN_DELAY_S="600")
    r.wait_for(r"respawning in 600s")
    r.proc.send_signal(signal.SIGTERM)
    assert r.finish(timeout=20) == 0, "\n".join(r.lines)
    assert len(r.runs()) == 1


def test_restarts_older_than_the_window_do_not_count(run_sh):
    """max_restarts 1 within 0.1 s, restarts 0.2 s apart: never more than one in the window."""
    r = run_sh("4 4 4 0", EMBER_RESPAWN_MAX_RESTARTS="1", EMBER_RESPAWN_WINDOW_S="0.1")
    assert r.finish() == 0, "\n".join(r.lines)
    assert [run["code"] for run in r.runs()] == [4, 4, 4, 0]
    assert sum("(restart 1 of at most 1 within 0.1s)" in line for line in r.lines) == 3


def test_a_node_left_by_a_crashed_cli_is_stopped_before_the_respawn(run_sh):
    """`ros2 run` dies, its node lives on: it gets SIGTERM, and is not respawned beside the old one."""
    r = run_sh("run run")
    r.wait_for("FAKE-CLI run 1 started")
    (run,) = r.runs()
    os.kill(run["pid"], signal.SIGKILL)
    r.wait_for(r"exited with code 137; respawning in 0\.2s")
    assert not alive(run["node"])
    r.wait_for("FAKE-CLI run 2 started")
    r.proc.send_signal(signal.SIGTERM)
    assert r.finish() == 0, "\n".join(r.lines)
    assert not any("still running" in line for line in r.lines), r.lines


def test_a_straggler_of_the_node_is_killed_when_the_cli_ends(run_sh):
    """A node that ignores SIGTERM and outlives `ros2 run` is killed after EMBER_STOP_TIMEOUT_S, not orphaned."""
    r = run_sh("stubborn", EMBER_STOP_TIMEOUT_S="0.5")
    r.wait_for("FAKE-CLI run 1 started")
    (run,) = r.runs()
    os.kill(run["pid"], signal.SIGKILL)  # the CLI dies; its node lives on, deaf to SIGTERM
    r.wait_for("still running after it ended; killing them")
    r.wait_for(r"respawning in 0\.2s")
    r.wait_for("FAKE-CLI run 2 started")
    assert not alive(run["node"])
    r.proc.send_signal(signal.SIGTERM)
    assert r.finish() == 0, "\n".join(r.lines)
    assert not any(alive(x["node"]) for x in r.runs())


def test_respawn_off_runs_the_node_once(run_sh):
    r = run_sh("5", EMBER_RESPAWN="0")
    assert r.finish() == 5
    assert len(r.runs()) == 1 and not any("respawn" in line for line in r.lines)


def test_docker_mode_is_supervised_the_same_way(run_sh):
    r = run_sh("7 0", mode="docker")
    assert r.finish() == 0, "\n".join(r.lines)
    runs = r.runs()
    assert [run["code"] for run in runs] == [7, 0] and {run["argv0"] for run in runs} == {"docker"}
    args = runs[0]["args"]
    assert args[:3] == ["run", "--rm", "--init"] and "TINI_KILL_PROCESS_GROUP=1" in args  # docker stop reaches the node


@pytest.mark.parametrize(
    "env, message",
    [
        ({"EMBER_RESPAWN": "yes"}, "EMBER_RESPAWN must be 0 or 1, not 'yes'"),
        ({"EMBER_RESPAWN_DELAY_S": "-1"}, "EMBER_RESPAWN_DELAY_S must be a number of seconds >= 0, not '-1'"),
        ({"EMBER_RESPAWN_MAX_RESTARTS": "0"}, "EMBER_RESPAWN_MAX_RESTARTS must be an integer >= 1, not '0'"),
        ({"EMBER_RESPAWN_WINDOW_S": "0"}, "EMBER_RESPAWN_WINDOW_S must be a number of seconds > 0, not '0'"),
        ({"EMBER_RESPAWN_WINDOW_S": "0.0004"}, "EMBER_RESPAWN_WINDOW_S must be a number of seconds > 0, not '0.0004'"),
        ({"EMBER_RESPAWN_DELAY_S": "1e3"}, "EMBER_RESPAWN_DELAY_S must be a number of seconds >= 0, not '1e3'"),
    ],
    ids=["respawn", "delay", "max-restarts", "window", "window-under-1ms", "delay-exponent"],
)
def test_a_bad_respawn_value_is_one_line(run_sh, env, message):
    r = run_sh("0", **env)
    assert r.finish() == 2
    assert r.lines == [f"run.sh: {message} (robot.env or the environment)"]
    assert not r.runs()
