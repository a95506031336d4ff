"""Allocation time per event (ember.ros.allocation, pure Python, no DDS) for 20, 100 and 500 robots.

    python bench/allocation.py [--sizes 20,100,500] [--tasks 30] [--events 4000] [--repeat 3] [--seed 0] [--json PATH]

A seeded stream of what a fleet manager sees during a shift, with `--tasks` tasks open at any time
(1-3 typed steps each, some untyped; a fifth of them need an underwater robot, and the underwater
robots are all down, so their steps stay pending as unassignable): heartbeats with +-1% battery
noise, robots going offline (their steps move) and coming back (pending steps are retried),
`available` toggled, a task closed and a new one opened. Each event kind's mean time per call (the
best of `--repeat` runs of the same stream) is printed with its ratio against the smallest size
measured in the same run; JSON goes to
bench/results/allocation.json. Not a test.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from _report import machine, write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ros2_ws" / "src" / "ember"))
DEFAULT_JSON = ROOT / "bench" / "results" / "allocation.json"
KINDS = ("heartbeat", "offline", "back_online", "unavailable", "available", "finish_task", "add_task")


def _task(rng: random.Random, tid: str) -> tuple[list, list[float]]:
    from ember.labels import ROBOT_TYPES
    from ember.ros.allocation import Step

    if rng.random() < 0.2:  # only an underwater robot will do
        scores = [0.9 if t == "underwater" else 0.1 for t in ROBOT_TYPES]
        return [Step(f"{tid}/1", tid, 1, "dive", "underwater")], scores
    scores = [rng.uniform(0.0, 1.0) for _ in ROBOT_TYPES]
    ranked = sorted(ROBOT_TYPES, key=lambda t: -scores[ROBOT_TYPES.index(t)])
    ranked = [t for t in ranked if t != "underwater"]
    steps = [Step(f"{tid}/{k}", tid, rng.randint(1, 3), "step", t) for k, t in enumerate(ranked[: rng.randint(1, 3)], 1)]
    if rng.random() < 0.2:
        steps.append(Step(f"{tid}/{len(steps) + 1}", tid, 4, "anyone", ""))
    return steps, scores


def measure(n: int, tasks: int, events: int, seed: int) -> dict:
    """One fleet size: mean microseconds per event kind."""
    from ember.labels import ROBOT_TYPES
    from ember.ros.allocation import Allocator, Policy

    rng = random.Random(seed)
    alloc = Allocator(Policy())
    types = {f"r{i:03d}": ROBOT_TYPES[i % len(ROBOT_TYPES)] for i in range(n)}
    battery = {rid: rng.uniform(0.4, 1.0) for rid in types}
    down: set[str] = set()
    away: set[str] = set()
    for rid, t in types.items():
        if t == "underwater":
            alloc.update_robot(rid, t, battery[rid], online=False)
            down.add(rid)
        else:
            alloc.update_robot(rid, t, battery[rid])
    count = 0
    for _ in range(tasks):
        count += 1
        alloc.add_task(f"t{count}", *_task(rng, f"t{count}"))
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    others = [rid for rid, t in types.items() if t != "underwater"]

    def timed(kind: str, op) -> None:
        t0 = time.perf_counter()
        op()
        times[kind].append((time.perf_counter() - t0) * 1e6)

    for _ in range(events):
        p = rng.random()
        rid = rng.choice(others)
        if p < 0.7:
            if rid not in down:
                b = battery[rid] + rng.uniform(-0.01, 0.01)
                timed("heartbeat", lambda rid=rid, b=b: alloc.update_robot(rid, types[rid], b, rid not in away))
        elif p < 0.8:
            if rid in down:
                down.discard(rid)
                timed("back_online", lambda rid=rid: alloc.update_robot(rid, types[rid], battery[rid], rid not in away))
            else:
                down.add(rid)
                timed("offline", lambda rid=rid: alloc.set_offline(rid))
        elif p < 0.85:
            if rid in down:
                continue
            if rid in away:
                away.discard(rid)
                timed("available", lambda rid=rid: alloc.update_robot(rid, types[rid], battery[rid], True))
            else:
                away.add(rid)
                timed("unavailable", lambda rid=rid: alloc.update_robot(rid, types[rid], battery[rid], False))
        else:
            tid = rng.choice(alloc.tasks())
            timed("finish_task", lambda tid=tid: alloc.finish_task(tid))
            count += 1
            steps, scores = _task(rng, f"t{count}")
            timed("add_task", lambda tid=f"t{count}", s=steps, sc=scores: alloc.add_task(tid, s, sc))
    alloc.check_invariants()
    row = {"robots": n, "pending_steps": len(alloc.pending())}
    for k, v in times.items():
        row[f"{k}_us"] = statistics.fmean(v) if v else float("nan")
        row[f"{k}_n"] = len(v)
    every = [x for v in times.values() for x in v]
    row["all_us"] = statistics.fmean(every)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20,100,500")
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; each kind's best mean counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    args = ap.parse_args()
    rows = []
    for n in args.sizes.split(","):
        runs = [measure(int(n), args.tasks, args.events, args.seed) for _ in range(max(args.repeat, 1))]
        rows.append({k: min(r[k] for r in runs) if k.endswith("_us") else runs[0][k] for k in runs[0]})
    base = rows[0]
    print(f"Allocation per event ({args.tasks} open tasks, {args.events} events; mean us, ratio vs {base['robots']} robots)")
    cols = KINDS + ("all",)
    print(f"{'robots':>7}{'pending':>9}" + "".join(f"{k:>20}" for k in cols))
    for r in rows:
        cells = []
        for k in cols:
            v = r[f"{k}_us"]
            r[f"{k}_ratio"] = v / base[f"{k}_us"] if base[f"{k}_us"] else float("nan")
            cells.append(f"{v:>11.1f} {r[f'{k}_ratio']:>6.1f}x ")
        print(f"{r['robots']:>7}{r['pending_steps']:>9}" + "".join(cells))
    out = {
        "benchmark": "allocation",
        **machine(),
        "baseline_robots": base["robots"],
        "tasks": args.tasks,
        "events": args.events,
        "repeat": args.repeat,
        "results": rows,
    }
    write_json(args.json, out)


if __name__ == "__main__":
    main()
