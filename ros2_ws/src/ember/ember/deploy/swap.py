"""Swap a checked bundle in at a robot's live bundle path in one atomic step (`ember-deploy swap-bundle`).

A running incident node (and the fleet manager) notices the swap and loads the new bundle by itself
(ember.engine.reload); nothing is restarted. The new bundle must sit beside the live one (the same
filesystem: the swap is a rename), and it is checked first (every file's sha256, the engine loads it
and runs one analysis): a bundle that fails leaves the live one untouched. When the live bundle is
an ember-deploy package's (`<package>/bundle`), the package's MANIFEST.json is updated to the new
bundle's files, so `run.sh check` keeps passing.

A live path that is a symlink (`current -> releases/v3`, a common layout) is not replaced by a
directory: the link is pointed at the new bundle in one atomic rename (a new link beside it, renamed
over it), written relative when the old one was, and both releases stay where they are (swapping the
old one back is the rollback). The new bundle may then live anywhere, another filesystem too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ember.deploy.check import check_package
from ember.deploy.package import MANIFEST, file_digests
from ember.engine.bundle import BUNDLE_JSON
from ember.fsutil import fsync_path, replace_directory


class SwapError(Exception):
    """A swap that cannot be attempted (bad paths): one line."""


@dataclass(frozen=True)
class SwapResult:
    """What was swapped in: versions before and after."""

    live: Path
    old_version: str
    new_version: str
    link_target: str = ""
    """where a symlinked `live` points now ('' when `live` is a directory)"""
    old_link_target: str = ""
    """where it pointed before, the release kept for a rollback ('' when that was gone)"""


def _version(bundle: Path) -> str:
    try:
        return str(json.loads((bundle / BUNDLE_JSON).read_text()).get("model_version", "?"))
    except (OSError, ValueError):
        return "?"


def swap_bundle(new: str | Path, live: str | Path, threads: int = 1) -> tuple[SwapResult | None, list[str]]:
    """Check `new` and, if it passes, swap it in at `live` (whose old contents are removed; a symlinked
    `live` is pointed at `new` instead, its old target kept).

    Returns (result, []) on success, (None, failures) when the check failed (nothing changed);
    SwapError for paths that cannot work, OSError when the swap itself fails.
    """
    new, live = Path(new).expanduser(), Path(live).expanduser()
    if not new.is_dir() or not (new / BUNDLE_JSON).is_file():
        raise SwapError(f"{new} is not a directory with a {BUNDLE_JSON} (a bundle)")
    if live.is_symlink():
        return _switch_link(new, live, threads)
    if live.exists() and new.resolve() == live.resolve():
        raise SwapError(f"{new} is the bundle itself: copy the new bundle beside it first")
    if not live.parent.is_dir():
        raise SwapError(f"{live.parent} does not exist")
    if live.exists() and not live.is_dir():
        raise SwapError(f"{live} is not a directory")
    if live.exists() and new.stat().st_dev != live.parent.stat().st_dev:
        raise SwapError(f"{new} is on another filesystem than {live}: copy it beside {live} first (the swap is a rename)")
    report = check_package(new, threads=threads, max_new_tokens=1)
    if not report.ok:
        return None, report.failures
    old_version = _version(live) if live.exists() else ""
    replace_directory(new, live)
    new_version = _version(live)
    _update_manifest(live, new_version)
    return SwapResult(live, old_version, new_version), []


def _switch_link(new: Path, live: Path, threads: int) -> tuple[SwapResult | None, list[str]]:
    """`swap_bundle` for a symlinked `live`: check `new`, then point the link at it atomically."""
    old_target = os.readlink(live)
    if live.exists() and new.resolve() == live.resolve():
        raise SwapError(f"{live} already points to {new}: nothing to swap")
    report = check_package(new, threads=threads, max_new_tokens=1)
    if not report.ok:
        return None, report.failures
    old_version, kept = (_version(live), old_target) if live.exists() else ("", "")
    if os.path.isabs(old_target):
        target = os.path.abspath(new)
    else:
        target = os.path.relpath(os.path.realpath(new), os.path.realpath(live.parent))  # from where the link is
    tmp = live.with_name(f".{live.name}.swap.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, live)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(live.parent)
    new_version = _version(live)
    _update_manifest(live, new_version)
    return SwapResult(live, old_version, new_version, target, kept), []


def _update_manifest(live: Path, version: str) -> None:
    """If `live` is a package's bundle, point the package's MANIFEST.json at the new bundle's files
    (written beside it, then renamed over it)."""
    manifest_path = live.parent / MANIFEST
    if live.name != "bundle" or not manifest_path.is_file():
        return
    manifest = json.loads(manifest_path.read_text())
    files = {rel: d for rel, d in manifest.get("files", {}).items() if not rel.startswith("bundle/")}
    files.update({f"bundle/{rel}": d for rel, d in file_digests(live).items()})
    manifest.update(files=dict(sorted(files.items())), model_version=version)
    tmp = manifest_path.with_name(f".{MANIFEST}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, manifest_path)
