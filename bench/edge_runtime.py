"""Edge runtime benchmark: the deployed INT8 bundle as a Raspberry Pi class robot runs it.

    python bench/edge_runtime.py [--bundle build/bundle] [--rounds 3] [--analyses 5] [--tokens 50]
                                 [--json bench/results/edge_runtime.json]

Every figure comes from fresh child processes of this one run, variants interleaved round by
round (the machine is shared: compare ratios, not milliseconds across runs):

* threads: a process pinned to one CPU (as `taskset -c 0`, docker --cpuset-cpus) asked for
  `threads` = all the machine's CPUs. The engine caps the threads to the CPUs it may use;
  the alternatives are onnxruntime given that many threads anyway, with its pool threads
  spinning (the engine before) and sleeping. Baseline: threads=1. Unpinned, the same with
  spinning on and off, with the CPU time each analysis burns (what the robot's other software
  loses).
* memory: VmHWM of a process that loads the bundle and runs the analyses, for the engine's
  onnxruntime options and each alternative (arena, memory pattern, no prepacking, lower graph
  optimisation, device allocator for initializers), and with the second (plain-text) tokenizer
  built at load as the engine did before; analyse latency as a ratio to the engine's. The
  absolute MiB include this script's own imports (bench/edge.py has the engine-only figure).
* start: import, bundle hash check, engine load, first analysis vs the later ones (pinned).
* frames: analyse latency of a 10000x10000 frame vs a 640x480 one, and its peak RSS above the frame.
* two threads: wall time of 2 x N analyses from two threads vs the same sequentially (the
  engine runs one analysis at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge import TASK, bench_image  # noqa: E402

DEFAULT_JSON = ROOT / "bench" / "results" / "edge_runtime.json"
MIB = 2**20

ORT_VARIANTS = {  # name -> (session option attribute changes, session config entries)
    "engine": ({}, {}),
    "cpu_mem_arena": ({"enable_cpu_mem_arena": True}, {}),
    "mem_pattern": ({"enable_mem_pattern": True}, {}),
    "no_prepacking": ({}, {"session.disable_prepacking": "1"}),
    "opt_basic": ({"graph_optimization_level": "ORT_ENABLE_BASIC"}, {}),
    "opt_extended": ({"graph_optimization_level": "ORT_ENABLE_EXTENDED"}, {}),
    "device_alloc_initializers": ({}, {"session.use_device_allocator_for_initializers": "1"}),
}


# -- child process ---------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith(key + ":")).split()[1])


def child(spec: dict) -> dict:
    """One measurement in this (fresh) process; `spec` says what."""
    if spec.get("pin"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    t0 = time.perf_counter()
    import numpy as np
    import onnxruntime as ort

    import ember.engine.engine as eng
    from ember.engine.bundle import load_bundle

    t_import = time.perf_counter() - t0
    attrs, entries = ORT_VARIANTS[spec.get("ort", "engine")]
    base_options = eng.session_options

    def options(threads: int = 1) -> ort.SessionOptions:
        opts = base_options(threads)
        for key, value in attrs.items():
            setattr(opts, key, getattr(ort.GraphOptimizationLevel, value) if isinstance(value, str) else value)
        for key, value in {**entries, **spec.get("entries", {})}.items():
            opts.add_session_config_entry(key, value)
        return opts

    eng.session_options = options
    if spec.get("uncapped"):  # the engine before: as many threads as asked, whatever the affinity
        eng.usable_cpus = lambda: spec["threads"]
    t = time.perf_counter()
    load_bundle(spec["bundle"])
    t_hash = time.perf_counter() - t
    t = time.perf_counter()
    engine = eng.EmberEngine(spec["bundle"], threads=spec["threads"])
    if spec.get("eager_tokenizer_copy"):  # the engine before: the plain-text tokenizer built at load
        engine._plain_tokenizer  # noqa: B018
    t_load = time.perf_counter() - t
    loaded_kib = _status_kib("VmHWM")
    image = np.load(spec["image"])
    if spec.get("huge"):
        image = np.ascontiguousarray(np.broadcast_to(image[:1, :1], (10000, 10000, 3)))
        image[::7] = 30
    image_kib = image.nbytes // 1024
    times, cpu = [], []
    for _ in range(spec["analyses"]):
        c, w = time.process_time(), time.perf_counter()
        engine.analyze(image, TASK, max_new_tokens=spec["tokens"], stop_at_eos=False)
        times.append((time.perf_counter() - w) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    out = {
        "threads": engine.threads,
        "import_s": t_import,
        "hash_s": t_hash,
        "load_s": t_load,
        "loaded_mib": loaded_kib / 1024,
        "peak_mib": _status_kib("VmHWM") / 1024,
        "image_mib": image_kib / 1024,
        "first_ms": times[0],
        "ms": statistics.median(times[1:] or times),
        "cpu_ms": statistics.median(cpu[1:] or cpu),
        "process_threads": len(os.listdir("/proc/self/task")),
    }
    if spec.get("two_threads"):
        import threading

        n = spec["analyses"]
        w = time.perf_counter()
        for _ in range(2 * n):
            engine.analyze(image, TASK, max_new_tokens=spec["tokens"], stop_at_eos=False)
        sequential = time.perf_counter() - w
        workers = [
            threading.Thread(target=lambda: [engine.analyze(image, TASK, max_new_tokens=spec["tokens"],
                                                            stop_at_eos=False) for _ in range(n)])
            for _ in range(2)
        ]
        w = time.perf_counter()
        for th in workers:
            th.start()
        for th in workers:
            th.join()
        out["two_threads_vs_sequential"] = (time.perf_counter() - w) / sequential
    return out


# -- parent ----------------------------------------------------------------------------------


def run_child(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interleaved(variants: dict[str, dict], rounds: int) -> dict[str, list[dict]]:
    """Each variant once per round, in turn, so machine load drifts hit all of them alike."""
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(rounds):
        for name, spec in variants.items():
            runs[name].append(run_child(spec))
            print(f"  round {r + 1}/{rounds} {name}: {runs[name][-1]['ms']:.1f} ms", flush=True)
    return runs


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "build" / "bundle")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--analyses", type=int, default=5)
    p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    import tempfile

    import numpy as np

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="ember-edge-runtime-") as tmp:
        image = Path(tmp) / "image.npy"
        np.save(image, bench_image())
        base = {"bundle": str(args.bundle), "image": str(image), "analyses": args.analyses, "tokens": args.tokens}
        spin = {"session.intra_op.allow_spinning": "1"}
        print(f"threads ({cores} CPUs; pinned to one):", flush=True)
        threads = interleaved({
            "pinned_threads1": {**base, "pin": True, "threads": 1},
            "pinned_engine_choice": {**base, "pin": True, "threads": cores},
            "pinned_uncapped_spinning": {**base, "pin": True, "threads": cores, "uncapped": True, "entries": spin},
            "pinned_uncapped_sleeping": {**base, "pin": True, "threads": cores, "uncapped": True},
            "unpinned_threads1": {**base, "threads": 1},
            "unpinned_spinning": {**base, "threads": cores, "entries": spin},
            "unpinned_sleeping": {**base, "threads": cores},
        }, args.rounds)
        print("memory (onnxruntime options):", flush=True)
        memory = interleaved({
            **{name: {**base, "threads": 1, "ort": name} for name in ORT_VARIANTS},
            "eager_tokenizer_copy": {**base, "threads": 1, "eager_tokenizer_copy": True},
        }, args.rounds)
        print("start, frames, two threads:", flush=True)
        start = interleaved({
            "start_pinned": {**base, "pin": True, "threads": 1},
            "frame_640x480": {**base, "threads": 1, "tokens": 1},
            "frame_10000x10000": {**base, "threads": 1, "tokens": 1, "huge": True},
            "two_threads": {**base, "threads": 1, "two_threads": True, "analyses": 3},
        }, args.rounds)

    t_base = med(threads["pinned_threads1"], "ms")
    u_base = med(threads["unpinned_threads1"], "ms")
    m_base = memory["engine"]
    result = {
        "bundle": os.path.relpath(args.bundle.resolve(), ROOT),
        "cores": cores,
        "rounds": args.rounds,
        "analyses": args.analyses,
        "tokens": args.tokens,
        "threads": {
            name: {
                "threads_used": runs[0]["threads"],
                "ms": med(runs, "ms"),
                "cpu_ms": med(runs, "cpu_ms"),
                "vs_threads1": med(runs, "ms") / (t_base if name.startswith("pinned") else u_base),
                "process_threads": runs[0]["process_threads"],
            }
            for name, runs in threads.items()
        },
        "memory": {
            name: {
                "loaded_mib": med(runs, "loaded_mib"),
                "peak_mib": med(runs, "peak_mib"),
                "peak_vs_engine": med(runs, "peak_mib") / med(m_base, "peak_mib"),
                "ms_vs_engine": med(runs, "ms") / med(m_base, "ms"),
                "load_vs_engine": med(runs, "load_s") / med(m_base, "load_s"),
            }
            for name, runs in memory.items()
        },
        "start_pinned": {
            "import_s": med(start["start_pinned"], "import_s"),
            "hash_check_s": med(start["start_pinned"], "hash_s"),
            "engine_load_s": med(start["start_pinned"], "load_s"),
            "first_ms": med(start["start_pinned"], "first_ms"),
            "later_ms": med(start["start_pinned"], "ms"),
            "first_vs_later": med(start["start_pinned"], "first_ms") / med(start["start_pinned"], "ms"),
        },
        "frames": {
            "ms_640x480": med(start["frame_640x480"], "ms"),
            "ms_10000x10000": med(start["frame_10000x10000"], "ms"),
            "huge_vs_640x480": med(start["frame_10000x10000"], "ms") / med(start["frame_640x480"], "ms"),
            "huge_extra_peak_mib": (med(start["frame_10000x10000"], "peak_mib") - med(start["frame_10000x10000"], "image_mib"))
            - (med(start["frame_640x480"], "peak_mib") - med(start["frame_640x480"], "image_mib")),
            "peak_640x480_mib": med(start["frame_640x480"], "peak_mib"),
        },
        "two_threads_vs_sequential": med(start["two_threads"], "two_threads_vs_sequential"),
    }
    print_report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def print_report(r: dict) -> None:
    print(f"\nEdge runtime, {r['bundle']}: {r['cores']} CPUs, median of {r['rounds']} rounds x "
          f"{r['analyses']} analyses, {r['tokens']} tokens")
    print(f"{'threads':<28}{'used':>6}{'ms':>9}{'CPU ms':>9}{'x threads=1':>13}{'OS threads':>12}")
    for name, t in r["threads"].items():
        print(f"{name:<28}{t['threads_used']:>6}{t['ms']:>9.1f}{t['cpu_ms']:>9.1f}{t['vs_threads1']:>13.2f}"
              f"{t['process_threads']:>12}")
    print(f"{'onnxruntime options':<28}{'load MiB':>10}{'peak MiB':>10}{'x peak':>8}{'x ms':>8}{'x load':>8}")
    for name, m in r["memory"].items():
        print(f"{name:<28}{m['loaded_mib']:>10.1f}{m['peak_mib']:>10.1f}{m['peak_vs_engine']:>8.3f}"
              f"{m['ms_vs_engine']:>8.2f}{m['load_vs_engine']:>8.2f}")
    s = r["start_pinned"]
    print(f"start (1 CPU): import {s['import_s']:.2f} s, hash check {s['hash_check_s']:.2f} s, engine load "
          f"{s['engine_load_s']:.2f} s (incl. hashes); first analysis {s['first_ms']:.0f} ms vs later "
          f"{s['later_ms']:.0f} ms (x{s['first_vs_later']:.2f})")
    f = r["frames"]
    print(f"frames (1 token): 10000x10000 {f['ms_10000x10000']:.0f} ms vs 640x480 {f['ms_640x480']:.0f} ms "
          f"(x{f['huge_vs_640x480']:.1f}); peak RSS beyond the frame itself +{f['huge_extra_peak_mib']:.1f} MiB "
          f"(640x480 peak {f['peak_640x480_mib']:.1f} MiB)")
    print(f"two threads, 2 x 3 analyses: wall x{r['two_threads_vs_sequential']:.2f} of sequential (serialised)")


if __name__ == "__main__":
    sys.exit(main())
