"""Start and stop Ember nodes many times under CPU load; count the stops that did not exit 0.

    python scripts/stop_stress.py [--stops 100] [--burners 3] [--nodes camera incident manager]
                                  [--domain 121] [--sigterm] [--sim] [--pythonpath DIR]

A stress tool, not a test (minutes; see tests/ros/test_stop_signals.py for the stop order checked on
every stop). --burners processes spin the CPU. Each node kind runs in a thread of its own (its own
ROS_DOMAIN_ID from --domain on, discovery LOCALHOST), sequentially: start, wait for READY, wait a
random 0..--max-delay s, send SIGINT (SIGTERM with --sigterm), wait for the exit. Exits other than 0
(a native crash: -11 SIGSEGV, -6 or 134 abort; "hang": no exit within 60 s) are counted per node and
their output saved under --logs. --pythonpath runs another copy of the `ember` package (a directory
holding ember/), to compare against an older version under the same load.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def burn() -> None:
    """Spin one CPU."""
    x = 0
    while True:
        x = (x * 31 + 7) % 1000003


def command(kind: str, bundle: str, sim: bool) -> list[str]:
    """The command line of one node kind (--sim: use_sim_time with no /clock, a paused simulation)."""
    ros = ["--ros-args"]
    if kind == "camera":
        args = ["-m", "ember.ros.camera", "--images", str(SHARED / "data/incidents/images"), "--rate", "30",
                "--format", "jpeg", *ros, "-r", "__ns:=/stress_cam"]
    elif kind == "incident":
        args = ["-m", "ember.ros.incident_node", *ros, "-r", "__ns:=/stress_bot", "-p", f"bundle:={bundle}",
                "-p", "robot_type:=wheeled", "-p", "heartbeat_period_s:=0.05", "-p", "diagnostics_period_s:=0.05"]
    elif kind == "manager":
        args = ["-m", "ember.ros.fleet_manager", *ros, "-p", "diagnostics_period_s:=0.05"]
    else:
        raise SystemExit(f"unknown node kind {kind}")
    if sim:
        args += ["-p", "use_sim_time:=true"]
    return [sys.executable, *args]


def loop(kind: str, domain: int, a: argparse.Namespace, sig: int, logs: Path, results: dict) -> None:
    """Start and stop one node kind --stops times; its exit codes into results[kind]."""
    stops, max_delay, bundle, sim = a.stops, a.max_delay, a.bundle, a.sim
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "EMBER_REQUIRE_LOCAL_DDS": "1", "PYTHONUNBUFFERED": "1", **({"PYTHONPATH": a.pythonpath} if a.pythonpath else {})}
    codes: Counter = Counter()
    for i in range(stops):
        proc = subprocess.Popen(command(kind, bundle, sim), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "READY":
                break
        time.sleep(random.uniform(0.0, max_delay))  # a stress tool: vary when the signal lands
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=60)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            rc = "hang"
        lines.append(out or "")
        codes[rc] += 1
        if rc != 0:
            (logs / f"{kind}_{i}_{rc}.log").write_text("".join(lines))
        print(f"{kind} {i + 1}/{stops} rc={rc}", flush=True)
    results[kind] = codes


def main() -> None:
    """Burn CPU, stop every node kind --stops times, print the counts."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--stops", type=int, default=100)
    ap.add_argument("--burners", type=int, default=3)
    ap.add_argument("--nodes", nargs="+", default=["camera", "incident", "manager"])
    ap.add_argument("--domain", type=int, default=121)
    ap.add_argument("--max-delay", type=float, default=0.3)
    ap.add_argument("--sigterm", action="store_true")
    ap.add_argument("--sim", action="store_true", help="use_sim_time with no /clock (a paused simulation)")
    ap.add_argument("--bundle", default=str(ROOT / "build/bundle"))
    ap.add_argument("--logs", default="/tmp/ember_stop_stress", help="output of the stops that did not exit 0")
    ap.add_argument("--pythonpath", default="", help="a directory holding another copy of the ember package")
    a = ap.parse_args()
    logs = Path(a.logs)
    logs.mkdir(parents=True, exist_ok=True)
    burners = [mp.Process(target=burn, daemon=True) for _ in range(a.burners)]
    for b in burners:
        b.start()
    results: dict = {}
    sig = signal.SIGTERM if a.sigterm else signal.SIGINT
    t0 = time.monotonic()
    try:
        threads = [threading.Thread(target=loop, args=(k, a.domain + n, a, sig, logs, results)) for n, k in enumerate(a.nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for b in burners:
            b.terminate()
            b.join()
    print(f"--- {a.stops} stops per node, {a.burners} burners, {signal.Signals(sig).name}, "
          f"{time.monotonic() - t0:.0f} s")
    for k, codes in results.items():
        bad = sum(v for rc, v in codes.items() if rc != 0)
        print(f"{k:9s} not clean: {bad}/{a.stops}  exit codes: {dict(codes)}")
    sys.exit(0)


if __name__ == "__main__":
    main()
