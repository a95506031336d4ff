"""Memory and resources of model reloads in a long-running process (ember.engine.reload, as the incident
node does them): one reload, and a new model every day for months.

    python bench/bundle_reload.py [--bundle build/bundle] [--alternate OTHER_BUNDLE] [--reloads 50]
                                  [--json bench/results/bundle_reload.json]

A fresh process loads a copy of the INT8 bundle (default: the robots' default, `make bundle`) into a
BundleSlot and analyses a 640x480 photo three times (50 tokens): its fresh steady peak RSS (VmHWM).
Then `--reloads` times a new model version is swapped in at the live path (ember.fsutil.replace_directory,
as `ember-deploy swap-bundle` does: the old directory is deleted) and reloaded from a thread of its own
while the old engine is still resident (the node's check timer), and analysed three times from another
thread (the node's worker). After each reload: the reload's peak RSS (VmHWM after a reset through
/proc/self/clear_refs), the resident size once the old engine was released, the steady peak of three
analyses on the new engine, each as a ratio against the fresh steady peak of the same run; the bytes
malloc holds for live allocations (glibc mallinfo2: a leak grows it, heap fragmentation does not), the
open file descriptors, the threads, and the descriptors and memory maps left on deleted files (an old
bundle whose disk space is never given back). The versions alternate between the bundle and
`--alternate` (another export; default: a copy of the bundle, a re-export of the same weights), each
swap a new model_version. Sizes are MiB (2**20 bytes). Writes the JSON record and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "bundle_reload.json"
PHOTO = ROOT.parent / "shared" / "data" / "incidents" / "images" / "example_fire.jpg"

SCRIPT = r"""
import ctypes, json, os, shutil, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

def status(key):
    with open("/proc/self/status") as fh:
        return int(next(l for l in fh if l.startswith(key + ":")).split()[1]) / 1024.0

def reset_peak():
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

try:
    _mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    _mallinfo2.restype = MallInfo2
except (OSError, AttributeError):  # not glibc >= 2.33
    _mallinfo2 = None

def malloc_live_mb():
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20  # heap chunks in use + mmapped chunks

def descriptors():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir used itself
            pass
    return out

def deleted_maps():
    with open("/proc/self/maps") as fh:
        return sorted({line.split(None, 5)[5].strip() for line in fh if line.rstrip().endswith("(deleted)")})

import cv2
from ember.engine.reload import BundleSlot, load_checked_engine, release_engine_memory
from ember.fsutil import replace_directory

live, sources, reloads, photo = Path(sys.argv[1]), [Path(p) for p in sys.argv[2].split(os.pathsep)], int(sys.argv[3]), sys.argv[4]
img = cv2.cvtColor(cv2.resize(cv2.imread(photo), (640, 480)), cv2.COLOR_BGR2RGB)
worker, reloader = ThreadPoolExecutor(1), ThreadPoolExecutor(1)  # the node's analysis worker, its reload timer

def analyse():
    with slot.using() as engine:
        engine.analyze(img, max_new_tokens=50, stop_at_eos=False)

def steady_peak():
    reset_peak()
    for _ in range(3):
        worker.submit(analyse).result()
    return status("VmHWM")

out = {"after_import_mb": status("VmRSS")}
slot = BundleSlot(live, load_checked_engine, release_engine_memory)
reloader.submit(slot.load_initial).result()
out["after_load_mb"] = status("VmRSS")
out["steady_peak_mb"] = steady_peak()
out["steady_rss_mb"] = status("VmRSS")
out["peak_reset"] = reset_peak()
out["fresh"] = {"malloc_live_mb": malloc_live_mb(), "fds": len(descriptors()), "threads": len(os.listdir("/proc/self/task"))}
steps = []
for i in range(1, reloads + 1):
    staged = live.with_name(".bundle.new")
    shutil.copytree(sources[i % len(sources)], staged)
    meta = json.loads((staged / "bundle.json").read_text())
    meta["model_version"] = f"{meta['model_version']}-day{i}"  # bundle.json is not hashed
    (staged / "bundle.json").write_text(json.dumps(meta, indent=1))
    replace_directory(staged, live)  # the old directory is deleted, as swap-bundle does
    reset_peak()
    outcome = reloader.submit(slot.reload).result()
    assert outcome.ok, outcome.message
    step = {"reload": i, "version": outcome.new_version, "reload_peak_mb": status("VmHWM"), "after_release_rss_mb": status("VmRSS")}
    step["steady_peak_mb"] = steady_peak()
    step["steady_rss_mb"] = status("VmRSS")
    fds = descriptors()
    step.update(malloc_live_mb=malloc_live_mb(), fds=len(fds), threads=len(os.listdir("/proc/self/task")),
                deleted_fds=sorted(f for f in fds if f.endswith("(deleted)")), deleted_maps=deleted_maps())
    steps.append(step)
out["reloads"] = steps
print("RESULT " + json.dumps(out))
"""


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def summarize(r: dict) -> dict:
    """The single-reload figures (the first reload) and the long-run ones (ratios against the fresh
    steady peak, slopes over the second half of the reloads: a plateau has ~0, a leak does not)."""
    fresh, steps = r["steady_peak_mb"], r["reloads"]
    first = steps[0]
    for s in steps:
        s["steady_peak_ratio"] = s["steady_peak_mb"] / fresh
        s["reload_peak_ratio"] = s["reload_peak_mb"] / fresh
    tail = steps[len(steps) // 2:]
    xs = [float(s["reload"]) for s in tail]
    live = [s["malloc_live_mb"] for s in tail if s["malloc_live_mb"] is not None]
    last = steps[-5:]
    return {
        "engine_resident_mb": r["after_load_mb"] - r["after_import_mb"],
        "reload_peak_mb": first["reload_peak_mb"],
        "after_reload_rss_mb": first["after_release_rss_mb"],
        "steady_peak_after_reload_mb": first["steady_peak_mb"],
        "reload_extra_mb": first["reload_peak_mb"] - fresh,
        "reload_peak_ratio": first["reload_peak_ratio"],
        "long_run": {
            "reloads": len(steps),
            "steady_peak_ratio_after": {str(n): steps[n - 1]["steady_peak_ratio"] for n in (1, 2, 5, 10, 20, 30, 50, 100)
                                        if n <= len(steps)},
            "steady_peak_ratio_last5_mean": sum(s["steady_peak_ratio"] for s in last) / len(last),
            "reload_peak_ratio_max": max(s["reload_peak_ratio"] for s in steps),
            "steady_peak_mib_per_reload_second_half": _slope(xs, [s["steady_peak_mb"] for s in tail]),
            "steady_rss_mib_per_reload_second_half": _slope(xs, [s["steady_rss_mb"] for s in tail]),
            "malloc_live_kib_per_reload_second_half": _slope(xs[-len(live):], live) * 1024 if len(live) == len(tail) else None,
            "fds": [r["fresh"]["fds"], max(s["fds"] for s in steps)],
            "threads": [r["fresh"]["threads"], max(s["threads"] for s in steps)],
            "deleted_fds_max": max(len(s["deleted_fds"]) for s in steps),
            "deleted_maps_max": max(len(s["deleted_maps"]) for s in steps),
        },
    }


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = r["reloads"]
    x = [0] + [s["reload"] for s in steps]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    ax[0].plot(x, [1.0] + [s["steady_peak_ratio"] for s in steps], "o-", ms=3, label="steady peak (3 analyses)")
    ax[0].plot(x[1:], [s["reload_peak_ratio"] for s in steps], "s-", ms=3, label="reload peak (two engines)")
    ax[0].plot(x, [r["steady_rss_mb"] / r["steady_peak_mb"]] + [s["steady_rss_mb"] / r["steady_peak_mb"] for s in steps],
               "^-", ms=3, label="resident after the analyses")
    ax[0].axhline(1.0, color="k", lw=0.8)
    ax[0].set_xlabel("reloads (a new model version each)")
    ax[0].set_ylabel(f"RSS / fresh steady peak ({r['steady_peak_mb']:.1f} MiB)")
    ax[0].legend(fontsize=8)
    if r["fresh"]["malloc_live_mb"] is not None:
        ax[1].plot(x, [r["fresh"]["malloc_live_mb"]] + [s["malloc_live_mb"] for s in steps], "o-", ms=3, color="tab:red")
    ax[1].set_xlabel("reloads")
    ax[1].set_ylabel("malloc'ed bytes in use (MiB, mallinfo2)")
    fig.suptitle(f"{Path(r['bundle']).name}: {len(steps)} reloads, fds {r['long_run']['fds']}, threads "
                 f"{r['long_run']['threads']}, deleted files held {r['long_run']['deleted_fds_max']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "build" / "bundle")
    p.add_argument("--alternate", type=Path, default=None,
                   help="another bundle (same robot types) to alternate with; default: a copy of --bundle")
    p.add_argument("--reloads", type=int, default=50, help="reloads in a row (default 50)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    for bundle in filter(None, (args.bundle, args.alternate)):
        if not (bundle / "bundle.json").is_file():
            print(f"bundle_reload: no bundle at {bundle} (build one with `make bundle`)", file=sys.stderr)
            return 1
    if args.reloads < 1:
        print("bundle_reload: --reloads must be at least 1", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="ember-reload-") as tmp:
        live = shutil.copytree(args.bundle, Path(tmp) / "robot" / "bundle")
        sources = [args.bundle, args.alternate or args.bundle]
        run = subprocess.run([sys.executable, "-c", SCRIPT, str(live), os.pathsep.join(map(str, sources)), str(args.reloads),
                              str(PHOTO)], capture_output=True, text=True, cwd=ROOT)
    line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(run.stdout + run.stderr, file=sys.stderr)
        return 1
    r = json.loads(line[len("RESULT "):])
    base_version = json.loads((args.bundle / "bundle.json").read_text())["model_version"]
    r.update({"bundle": str(args.bundle), "alternate": str(args.alternate or ""), "bundle_model_version": base_version})
    r.update(summarize(r), versions=[base_version, r["reloads"][0]["version"]])
    r.update(machine())
    fresh = r["steady_peak_mb"]
    print(f"engine resident after load: {r['engine_resident_mb']:.1f} MiB (process {r['after_load_mb']:.1f}, imports "
          f"{r['after_import_mb']:.1f}); fresh steady peak (3 analyses): {fresh:.1f} MiB")
    print(f"{'reload':>6} {'reload peak':>16} {'after release':>13} {'steady peak':>16} {'malloc live':>11} {'fds':>4} "
          f"{'thr':>4} {'deleted':>7}")
    for s in r["reloads"]:
        live_mb = "" if s["malloc_live_mb"] is None else f"{s['malloc_live_mb']:.2f}"
        print(f"{s['reload']:>6} {s['reload_peak_mb']:>7.1f} ({s['reload_peak_ratio']:.3f}x) {s['after_release_rss_mb']:>13.1f} "
              f"{s['steady_peak_mb']:>7.1f} ({s['steady_peak_ratio']:.3f}x) {live_mb:>11} {s['fds']:>4} {s['threads']:>4} "
              f"{len(s['deleted_fds']) + len(s['deleted_maps']):>7}")
    lr = r["long_run"]
    print(f"steady peak after {', '.join(f'{n}: {v:.3f}x' for n, v in lr['steady_peak_ratio_after'].items())} the fresh "
          f"one; last 5 mean {lr['steady_peak_ratio_last5_mean']:.3f}x; second half: steady peak "
          f"{lr['steady_peak_mib_per_reload_second_half']:+.3f} MiB/reload, malloc live "
          f"{lr['malloc_live_kib_per_reload_second_half'] or 0:+.1f} KiB/reload; fds {lr['fds'][0]} -> max {lr['fds'][1]}, "
          f"threads {lr['threads'][0]} -> max {lr['threads'][1]}, deleted files held: {lr['deleted_fds_max']} fds, "
          f"{lr['deleted_maps_max']} maps")
    write_json(args.json, r)
    plot(r, args.json.with_suffix(".png"))
    print(f"wrote {args.json.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
