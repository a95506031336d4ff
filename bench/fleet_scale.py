"""Fleet-scale benchmark (issue 5): the fleet manager with 10, 50 and 200 simulated robots.

    python bench/fleet_scale.py [--sizes 10,50,200] [--tasks 20] [--idle 8] [--json PATH]

For each size a fresh fleet manager process runs; this process simulates the robots
(ember.ros.sim: RobotStatus at 2 Hz each, plan subscriptions per robot) and measures:
* CPU% of the manager process (utime+stime from /proc, % of one core) over an idle window
  with heartbeats only, and its CPU time per task in the task phase (10 ms clock ticks);
* allocation latency per task: SubmitTask call -> response, and -> every assigned robot
  has received its ActionPlan (p50/p99), plus the manager's own planning time from its
  diagnostics (allocation_ms_p50).
Ratios are against the smallest size measured in the same run. Prints a table and writes
JSON (default bench/results/fleet_scale.json). Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import machine, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "fleet_scale.json"
FIRE = [0.9, 0.7, 0.1, 0.2, 0.0]


def _env() -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ["EMBER_REQUIRE_LOCAL_DDS"] = "1"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def measure(n: int, tasks: int, idle_s: float, tmp: Path) -> dict:
    """One fleet size; returns its figures."""
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from ember_msgs.srv import SubmitTask
    from rclpy.executors import SingleThreadedExecutor

    from ember.ros.qos import DIAGNOSTICS_QOS
    from ember.ros.sim import SimulatedRobots

    pf = tmp / f"manager_{n}.yaml"
    params = {"heartbeat_timeout_s": 3.0, "diagnostics_period_s": 0.5, "task_wait_s": 5.0, "fusion_window_s": 3600.0}
    pf.write_text(yaml.safe_dump({"/fleet_manager": {"ros__parameters": params}}))
    log = tmp / f"manager_{n}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ember.ros.fleet_manager", "--ros-args", "--params-file", str(pf)],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
        )
    node = rclpy.create_node(f"fleet_scale_bench_{n}")
    sim = SimulatedRobots(n, rate_hz=2.0, prefix=f"n{n}")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(sim)
    diag: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == "ember/fleet_manager":
                diag.clear()
                diag.update({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, DIAGNOSTICS_QOS)

    def spin_until(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not pred() and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)
        return bool(pred())

    try:
        if not spin_until(lambda: diag.get("robots_online") == str(n), 120):
            raise RuntimeError(f"manager saw {diag.get('robots_online')} of {n} robots:\n{log.read_text()[-3000:]}")
        spin_until(lambda: False, 2.0)  # settle
        c0, w0, s0 = _cpu_seconds(proc.pid), time.monotonic(), int(diag["status_msgs"])
        spin_until(lambda: False, idle_s)
        c1, w1, s1 = _cpu_seconds(proc.pid), time.monotonic(), int(diag["status_msgs"])
        idle_cpu = 100.0 * (c1 - c0) / (w1 - w0)
        status_rate = (s1 - s0) / (w1 - w0)

        reporters = [f"n{n}_{i:03d}" for i in range(3)]
        for rid in reporters:
            sim.add_reporter(rid)
        if not spin_until(sim.report_publishers_matched, 30):
            raise RuntimeError("the manager did not subscribe to the reporters")
        for rid in reporters:
            sim.publish_report(rid, "on fire", FIRE)
        client = node.create_client(SubmitTask, "/fleet/submit_task")
        if not spin_until(client.service_is_ready, 30):
            raise RuntimeError("SubmitTask not available")
        rt_ms, plans_ms = [], []
        c2 = _cpu_seconds(proc.pid)
        for k in range(tasks + 1):
            t0, t0m = time.perf_counter(), time.monotonic()
            fut = client.call_async(SubmitTask.Request(task=f"Put out the fire ({k})"))
            spin_until(fut.done, 30)
            t1 = time.perf_counter()
            res = fut.result()
            if res is None or not res.success:
                raise RuntimeError(f"task {k} failed: {res and res.message}\n{log.read_text()[-3000:]}")
            if not spin_until(lambda r=res: len(sim.plans_for(list(r.plan_ids))) == len(r.plan_ids), 30):
                raise RuntimeError(f"plans of task {k} did not all arrive")
            t2 = max(t for r in sim.robots.values() for t, p in r.plans if p.plan_id in res.plan_ids)
            if k == 0:
                continue  # warm-up
            rt_ms.append((t1 - t0) * 1e3)
            plans_ms.append((t2 - t0m) * 1e3)
        c3 = _cpu_seconds(proc.pid)
        spin_until(lambda: False, 1.0)
        return {
            "robots": n,
            "status_msgs_per_s": status_rate,
            "idle_cpu_pct": idle_cpu,
            "cpu_ms_per_task": 1000.0 * (c3 - c2) / (tasks + 1),
            "submit_p50_ms": statistics.median(rt_ms),
            "submit_p99_ms": _pct(rt_ms, 0.99),
            "plans_received_p50_ms": statistics.median(plans_ms),
            "plans_received_p99_ms": _pct(plans_ms, 0.99),
            "manager_allocation_ms_p50": float(diag.get("allocation_ms_p50", "nan")),
            "tasks": len(rt_ms),
        }
    finally:
        ex.shutdown()
        sim.destroy_node()
        node.destroy_node()
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50,200")
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--idle", type=float, default=8.0, help="seconds of the heartbeat-only CPU window")
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    args = ap.parse_args()
    _env()
    from ember.ros import runtime

    sizes = [int(s) for s in args.sizes.split(",")]
    runtime.init()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                rows.append(measure(n, args.tasks, args.idle, Path(tmp)))
                print(f"  {n} robots done", flush=True)
    finally:
        runtime.shutdown()
    base = rows[0]
    for r in rows:
        r["plans_received_p50_ratio"] = r["plans_received_p50_ms"] / base["plans_received_p50_ms"]
        r["idle_cpu_ratio"] = r["idle_cpu_pct"] / base["idle_cpu_pct"] if base["idle_cpu_pct"] > 0 else float("nan")
    print(f"Fleet manager scale ({args.tasks} tasks per size, heartbeats at 2 Hz; ratios vs {base['robots']} robots)")
    head = f"{'robots':>7}{'status/s':>10}{'idle CPU%':>11}{'CPU/task':>10}{'submit p50':>12}{'p99':>8}{'plans p50':>11}{'p99':>8}{'alloc p50':>11}{'x base':>8}{'CPU x':>7}"
    print(head)
    for r in rows:
        print(
            f"{r['robots']:>7}{r['status_msgs_per_s']:>10.0f}{r['idle_cpu_pct']:>11.1f}{r['cpu_ms_per_task']:>8.1f}ms"
            f"{r['submit_p50_ms']:>10.1f}ms{r['submit_p99_ms']:>6.1f}ms{r['plans_received_p50_ms']:>9.1f}ms"
            f"{r['plans_received_p99_ms']:>6.1f}ms{r['manager_allocation_ms_p50']:>9.2f}ms"
            f"{r['plans_received_p50_ratio']:>7.2f}x{r['idle_cpu_ratio']:>6.2f}x"
        )
    out = {
        "benchmark": "fleet_scale",
        **machine(),
        "baseline_robots": base["robots"],
        "results": rows,
    }
    write_json(args.json, out)


if __name__ == "__main__":
    main()
