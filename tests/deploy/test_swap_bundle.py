"""`ember-deploy swap-bundle NEW LIVE`: a new bundle is checked, then swapped in at a running robot's
bundle path in one atomic step (the node loads it by itself: docs/DEPLOYMENT.md, "Rolling out")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ember.deploy.check import check_package
from ember.deploy.cli import main as deploy_main


def _bundles(tiny_bundle: Path, tmp_path: Path) -> tuple[Path, Path]:
    live = tmp_path / "opt" / "bundle"
    shutil.copytree(tiny_bundle, live)
    new = tmp_path / "opt" / ".bundle.new"
    shutil.copytree(tiny_bundle, new)
    meta = json.loads((new / "bundle.json").read_text())
    meta["model_version"] = "v-next"  # bundle.json is not among the hashed files it lists
    (new / "bundle.json").write_text(json.dumps(meta))
    return new, live


def test_a_checked_bundle_is_swapped_in_and_the_old_one_is_gone(tiny_bundle: Path, tmp_path: Path, capsys):
    new, live = _bundles(tiny_bundle, tmp_path)
    old_version = json.loads((live / "bundle.json").read_text())["model_version"]
    assert deploy_main(["swap-bundle", str(new), str(live)]) == 0
    out = capsys.readouterr().out
    assert json.loads((live / "bundle.json").read_text())["model_version"] == "v-next"
    assert not new.exists() and sorted(p.name for p in live.parent.iterdir()) == ["bundle"]
    assert f"{live} now holds model v-next (was {old_version})" in out


def test_a_bad_bundle_is_refused_and_the_live_one_is_untouched(tiny_bundle: Path, tmp_path: Path, capsys):
    new, live = _bundles(tiny_bundle, tmp_path)
    before = {p.name: p.read_bytes() for p in live.iterdir()}
    with open(new / "decoder.onnx", "r+b") as f:  # corrupt: the sha256 in bundle.json no longer matches
        f.seek(100)
        f.write(b"\0" * 16)
    assert deploy_main(["swap-bundle", str(new), str(live)]) == 1
    err = capsys.readouterr().err
    assert "not swapped in" in err and "decoder.onnx" in err
    assert {p.name: p.read_bytes() for p in live.iterdir()} == before and new.exists()


def test_refusals_are_one_line(tiny_bundle: Path, tmp_path: Path, capsys):
    new, live = _bundles(tiny_bundle, tmp_path)
    assert deploy_main(["swap-bundle", str(tmp_path / "missing"), str(live)]) == 2
    assert deploy_main(["swap-bundle", str(new), str(new)]) == 2
    assert deploy_main(["swap-bundle", str(new), str(tmp_path / "nowhere" / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("ember-deploy swap-bundle: ") for line in err), err
    assert "is not a directory" in err[0] and "is the bundle itself" in err[1] and "does not exist" in err[2]


def test_run_sh_swaps_a_new_bundle_into_its_package_and_the_package_still_checks(package: Path, tmp_path: Path):
    """`run.sh swap-bundle NEW` on a robot: the package's bundle is replaced and its MANIFEST.json
    follows, so `run.sh check` (and ember-deploy check) keep passing on the updated package."""
    pkg = tmp_path / package.name
    shutil.copytree(package, pkg, symlinks=True)
    (pkg / ".venv").symlink_to(Path(sys.executable).parents[1])  # what `run.sh setup` would create
    new = tmp_path / ".bundle.new"
    shutil.copytree(pkg / "bundle", new)
    meta = json.loads((new / "bundle.json").read_text())
    meta["model_version"] = "v-next"
    (new / "bundle.json").write_text(json.dumps(meta))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(["bash", str(pkg / "run.sh"), "swap-bundle", str(new)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "now holds model v-next" in proc.stdout
    manifest = json.loads((pkg / "MANIFEST.json").read_text())
    assert manifest["model_version"] == "v-next"
    report = check_package(pkg, load_engine=False)
    assert report.ok, report.failures
    proc = subprocess.run(["bash", str(pkg / "run.sh"), "swap-bundle"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage:" in proc.stderr


def _releases(tiny_bundle: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The symlink layout many deploy with: releases/v1, releases/v2 and `current -> releases/v1`."""
    base = tmp_path / "opt"
    v1 = base / "releases" / "v1"
    shutil.copytree(tiny_bundle, v1)
    v2 = base / "releases" / "v2"
    shutil.copytree(tiny_bundle, v2)
    meta = json.loads((v2 / "bundle.json").read_text())
    meta["model_version"] = "v-next"
    (v2 / "bundle.json").write_text(json.dumps(meta))
    (base / "current").symlink_to("releases/v1")
    return v1, v2, base / "current"


def test_a_symlinked_live_bundle_is_pointed_at_the_new_release_and_the_layout_kept(tiny_bundle: Path, tmp_path: Path,
                                                                                   capsys):
    """`swap-bundle releases/v2 current` with `current -> releases/v1`: `current` stays a symlink, now to
    releases/v2 (relative, as it was), and both releases stay where they are (releases/v1 for a rollback).
    It used to move releases/v2 over the symlink: `current` became a plain directory and releases/v2 a
    dangling symlink, so the operator's next `ln -sfn releases/v3 current` went into the directory."""
    v1, v2, current = _releases(tiny_bundle, tmp_path)
    v1_files = {p.name: p.read_bytes() for p in v1.iterdir()}
    old_version = json.loads((v1 / "bundle.json").read_text())["model_version"]
    assert deploy_main(["swap-bundle", str(v2), str(current)]) == 0
    out = capsys.readouterr().out
    assert current.is_symlink() and os.readlink(current) == "releases/v2"
    assert v2.is_dir() and not v2.is_symlink() and json.loads((current / "bundle.json").read_text())["model_version"] == "v-next"
    assert {p.name: p.read_bytes() for p in v1.iterdir()} == v1_files, "the old release is kept for a rollback"
    assert sorted(p.name for p in current.parent.iterdir()) == ["current", "releases"], "no temporary left"
    assert f"{current} -> releases/v2 now holds model v-next (was {old_version}, releases/v1 is kept: " in out, out

    assert deploy_main(["swap-bundle", str(v1), str(current)]) == 0, "rolling back is the same command"
    assert os.readlink(current) == "releases/v1"


def test_a_symlinked_live_bundle_refuses_the_release_it_points_to_and_a_bad_one(tiny_bundle: Path, tmp_path: Path,
                                                                                 capsys):
    v1, v2, current = _releases(tiny_bundle, tmp_path)
    assert deploy_main(["swap-bundle", str(v1), str(current)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"ember-deploy swap-bundle: {current} already points to {v1}: nothing to swap", err
    with open(v2 / "decoder.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 16)
    assert deploy_main(["swap-bundle", str(v2), str(current)]) == 1
    assert "not swapped in" in capsys.readouterr().err
    assert os.readlink(current) == "releases/v1"


def test_a_dangling_live_symlink_is_pointed_at_the_new_release(tiny_bundle: Path, tmp_path: Path, capsys):
    """The release `current` pointed to was deleted: swapping a good one in repairs the link."""
    v1, v2, current = _releases(tiny_bundle, tmp_path)
    shutil.rmtree(v1)
    assert deploy_main(["swap-bundle", str(v2), str(current)]) == 0, capsys.readouterr().err
    assert os.readlink(current) == "releases/v2"
    assert f"{current} -> releases/v2 now holds model v-next; " in capsys.readouterr().out
