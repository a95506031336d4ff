"""Memory of a model reload in a running process (ember.engine.reload, as the incident node does it).

    python bench/bundle_reload.py [--bundle build/bundle] [--json bench/results/bundle_reload.json]

A fresh process loads a copy of the INT8 bundle (default: the robots' default, `make bundle`) into a
BundleSlot, analyses a 640x480 photo three times (its steady peak RSS, VmHWM), then a new version of
the bundle (the same files, another model_version) is swapped in beside it and reloaded while the
old engine is still resident: the reload's peak RSS (VmHWM after a reset through
/proc/self/clear_refs) against the steady peak, the resident size after the old engine was released,
and after three analyses on the new one. Sizes are MiB (2**20 bytes).
"""

from __future__ import annotations

import argparse
import json
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
import json, shutil, sys
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

import cv2
from ember.engine.reload import BundleSlot, load_checked_engine, release_engine_memory
from ember.fsutil import replace_directory

live, new, photo = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
img = cv2.cvtColor(cv2.resize(cv2.imread(photo), (640, 480)), cv2.COLOR_BGR2RGB)
out = {"after_import_mb": status("VmRSS")}
slot = BundleSlot(live, load_checked_engine, release_engine_memory)
slot.load_initial()
out["after_load_mb"] = status("VmRSS")
for _ in range(3):
    with slot.using() as engine:
        engine.analyze(img, max_new_tokens=50, stop_at_eos=False)
del engine  # as a node's analysis function returns: only the slot holds the engine
out["steady_peak_mb"] = status("VmHWM")
out["steady_rss_mb"] = status("VmRSS")
out["peak_reset"] = reset_peak()
replace_directory(new, live)
outcome = slot.reload()
assert outcome.ok, outcome.message
out["reload_peak_mb"] = status("VmHWM")
out["after_reload_rss_mb"] = status("VmRSS")
reset_peak()
for _ in range(3):
    with slot.using() as engine:
        engine.analyze(img, max_new_tokens=50, stop_at_eos=False)
out["steady_peak_after_reload_mb"] = status("VmHWM")
out["versions"] = [outcome.old_version, outcome.new_version]
print("RESULT " + json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "build" / "bundle")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    if not (args.bundle / "bundle.json").is_file():
        print(f"bundle_reload: no bundle at {args.bundle} (build one with `make bundle`)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="ember-reload-") as tmp:
        live = shutil.copytree(args.bundle, Path(tmp) / "bundle")
        new = shutil.copytree(args.bundle, Path(tmp) / "new")
        meta = json.loads((new / "bundle.json").read_text())
        meta["model_version"] = f"{meta['model_version']}-reloaded"
        (new / "bundle.json").write_text(json.dumps(meta, indent=1))
        run = subprocess.run([sys.executable, "-c", SCRIPT, str(live), str(new), str(PHOTO)],
                             capture_output=True, text=True, cwd=ROOT)
    line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(run.stdout + run.stderr, file=sys.stderr)
        return 1
    r = json.loads(line[len("RESULT "):])
    engine_mb = r["after_load_mb"] - r["after_import_mb"]
    r.update({
        "bundle": str(args.bundle), "bundle_model_version": meta["model_version"].removesuffix("-reloaded"),
        "engine_resident_mb": engine_mb,
        "reload_extra_mb": r["reload_peak_mb"] - r["steady_peak_mb"],
        "reload_peak_ratio": r["reload_peak_mb"] / r["steady_peak_mb"],
        **machine(),
    })
    print(f"engine resident after load: {engine_mb:.1f} MiB (process {r['after_load_mb']:.1f}, imports "
          f"{r['after_import_mb']:.1f})")
    print(f"steady peak (3 analyses): {r['steady_peak_mb']:.1f} MiB; reload peak: {r['reload_peak_mb']:.1f} MiB "
          f"(+{r['reload_extra_mb']:.1f} MiB, {r['reload_peak_ratio']:.2f}x); after the old engine was released: "
          f"{r['after_reload_rss_mb']:.1f} MiB (steady {r['steady_rss_mb']:.1f}); steady peak on the new engine: "
          f"{r['steady_peak_after_reload_mb']:.1f} MiB")
    write_json(args.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
