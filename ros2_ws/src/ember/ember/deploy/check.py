"""`ember-deploy check DIR`: is this package intact and does the engine run here?

Checks, each reported on its own line: MANIFEST.json hashes of every file (and no
unlisted files in bundle/), the bundle's own sha256 list, the robot params file, the
robot-side imports, then loading the engine and analysing one image.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ember.deploy.package import MANIFEST, PARAMS_FILE, file_digests, manifest_digest
from ember.engine.bundle import BUNDLE_JSON, sha256_file
from ember.labels import ROBOT_TYPES

RUNTIME_MODULES = ("numpy", "onnxruntime", "tokenizers", "cv2", "yaml")


@dataclass
class CheckReport:
    """Results of one check run: (name, ok, detail) per check."""

    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append((name, ok, detail))
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.results)

    @property
    def failures(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.results if not ok]

    def lines(self) -> list[str]:
        return [f"{'ok  ' if ok else 'FAIL'} {name:<10} {detail}" for name, ok, detail in self.results]


def _check_manifest(pkg: Path, report: CheckReport) -> None:
    path = pkg / MANIFEST
    if not path.is_file():
        report.add("manifest", False, f"{path} is missing: not an ember-deploy package")
        return
    try:
        manifest = json.loads(path.read_text())
        listed: dict[str, str] = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        report.add("manifest", False, f"{MANIFEST} is unreadable ({exc})")
        return
    actual = file_digests(pkg)
    problems = []
    for rel, digest in sorted(listed.items()):
        if rel not in actual:
            problems.append(f"{rel} is missing")
        elif actual[rel] != digest:
            problems.append(f"{rel} changed (sha256 {actual[rel][:12]}..., expected {digest[:12]}...)")
    extra = sorted(rel for rel in actual if rel not in listed and rel.startswith("bundle/"))
    problems += [f"{rel} is not part of the package" for rel in extra]
    if problems:
        report.add("manifest", False, "; ".join(problems))
    else:
        detail = f"{len(listed)} files match (manifest {manifest_digest(path)}, robot {manifest.get('robot_id', '?')})"
        report.add("manifest", True, detail)


def _check_bundle_hashes(bundle: Path, report: CheckReport) -> bool:
    meta_path = bundle / BUNDLE_JSON
    try:
        meta = json.loads(meta_path.read_text())
        files = dict(meta["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return report.add("bundle", False, f"{meta_path} is missing or unreadable ({exc})")
    problems = []
    for name, entry in sorted(files.items()):
        expected = entry.get("sha256") if isinstance(entry, dict) else entry
        path = bundle / name
        if Path(name).name != name:  # as the engine refuses it: never hash a file outside the bundle
            problems.append(f"file name {name!r} must not contain a path")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name} does not match its sha256 in {BUNDLE_JSON} (corrupt or changed)")
    if problems:
        return report.add("bundle", False, "; ".join(problems))
    return report.add("bundle", True, f"{len(files)} files match bundle.json ({meta.get('model_version', '?')})")


def _check_params(pkg: Path, report: CheckReport) -> None:
    path = pkg / PARAMS_FILE
    try:
        data = yaml.safe_load(path.read_text())
        params = data["/**"]["ros__parameters"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        report.add("params", False, f"{path} is missing or not a ROS 2 params file ({exc})")
        return
    if not isinstance(params, dict):
        report.add("params", False, f"{PARAMS_FILE}: ros__parameters is {type(params).__name__}, not a mapping")
        return
    problems = [f"lacks {k}" for k in ("robot_id", "robot_type", "bundle") if k not in params]
    if params.get("robot_type") not in ROBOT_TYPES:
        problems.append(f"robot_type {params.get('robot_type')!r} is not one of {', '.join(ROBOT_TYPES)}")
    if problems:
        report.add("params", False, f"{PARAMS_FILE}: " + "; ".join(problems))
    else:
        report.add("params", True, f"robot {params['robot_id']} ({params['robot_type']})")


def _check_imports(report: CheckReport) -> bool:
    versions, missing = [], []
    for name in RUNTIME_MODULES:
        try:
            mod = importlib.import_module(name)
            versions.append(f"{name} {getattr(mod, '__version__', '?')}")
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        return report.add("runtime", False, f"cannot import {', '.join(missing)}: run `./run.sh setup`")
    return report.add("runtime", True, f"python {sys.version.split()[0]}, " + ", ".join(versions))


def _test_image(path: str | Path | None) -> np.ndarray:
    if path is None:  # a deterministic scene: sky gradient over ground
        h, w = 240, 320
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = np.linspace(90, 200, h // 2, dtype=np.uint8)[:, None, None] * np.array([0.6, 0.8, 1.0])
        img[h // 2 :] = (90, 70, 50)
        return img
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (VmHWM; ru_maxrss can carry a parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _check_engine(bundle: Path, report: CheckReport, threads: int, image: str | Path | None, tokens: int) -> None:
    from ember.engine import BundleError, EmberEngine

    t0 = time.perf_counter()
    try:
        engine = EmberEngine(bundle, threads=threads)
    except BundleError as exc:
        report.add("engine", False, f"cannot load: {exc}")
        return
    report.add("engine", True, f"loaded {engine.model_version} in {(time.perf_counter() - t0) * 1e3:.0f} ms")
    try:
        result: Any = engine.analyze(_test_image(image), max_new_tokens=tokens)
    except Exception as exc:  # noqa: BLE001 - report any failure of the smoke analysis
        report.add("analyze", False, f"{type(exc).__name__}: {exc}")
        return
    total = result.timings_ms.get("total_ms", float("nan"))
    report.add(
        "analyze",
        True,
        f"{total:.0f} ms for {result.num_generated_tokens} tokens ({engine.threads} thread"
        f"{'s' if engine.threads > 1 else ''}); "
        f"incident {result.incident_type!r}, robots {', '.join(result.robot_types)}; peak RSS {_peak_rss_mb():.0f} MiB",
    )


def check_package(
    pkg_dir: str | Path,
    threads: int = 1,
    image: str | Path | None = None,
    max_new_tokens: int = 8,
    load_engine: bool = True,
) -> CheckReport:
    """Run every check on a package folder (or on a bare bundle folder: then only bundle + engine)."""
    pkg = Path(pkg_dir).expanduser()
    report = CheckReport()
    if not pkg.is_dir():
        report.add("package", False, f"{pkg} is not a directory")
        return report
    is_bare_bundle = (pkg / BUNDLE_JSON).is_file() and not (pkg / MANIFEST).is_file()
    bundle = pkg if is_bare_bundle else pkg / "bundle"
    if not is_bare_bundle:
        _check_manifest(pkg, report)
        _check_params(pkg, report)
    _check_bundle_hashes(bundle, report)
    imports_ok = _check_imports(report)
    if load_engine and imports_ok:  # the engine checks the hashes again and must refuse a corrupt bundle
        _check_engine(bundle, report, threads, image, max_new_tokens)
    return report
