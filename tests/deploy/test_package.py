"""ember-deploy package / check on the tiny bundle, and the package's run script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ember.deploy.check import check_package
from ember.deploy.cli import main as deploy_main
from ember.deploy.package import MANIFEST, PackageError, build_package
from ember.fleet_config import incident_node_description
from ember.fleet_config import load as load_fleet
from tests.conftest import ROOT
from tests.deploy.conftest import FLEET, deploy_cli


def _copy(package: Path, tmp_path: Path) -> Path:
    dst = tmp_path / package.name
    shutil.copytree(package, dst, symlinks=True)
    return dst


def test_package_layout(package: Path, tiny_bundle: Path):
    for rel in ("bundle/bundle.json", "bundle/vision.onnx", "bundle/decoder.onnx", "bundle/tokenizer.json",
                "config/robot.yaml", "robot.env", "requirements.txt", "constraints-ros.txt", "run.sh",
                "python/ember/engine/engine.py", "python/ember/serve/app.py", MANIFEST):
        assert (package / rel).is_file(), rel
    assert os.access(package / "run.sh", os.X_OK)
    manifest = json.loads((package / MANIFEST).read_text())
    assert manifest["robot_id"] == "legged_1" and manifest["robot_type"] == "legged"
    assert "bundle/decoder.onnx" in manifest["files"] and MANIFEST not in manifest["files"]
    assert not [f for f in manifest["files"] if "__pycache__" in f]
    reqs = (package / "requirements.txt").read_text()
    assert reqs == (ROOT / "requirements" / "robot.txt").read_text()
    assert not [line for line in reqs.lower().splitlines() if line.split("#")[0].strip().startswith("torch")]
    for src in tiny_bundle.iterdir():
        assert (package / "bundle" / src.name).read_bytes() == src.read_bytes(), src.name
    assert "EMBER_ROBOT_ID=legged_1" in (package / "robot.env").read_text()
    # the fleet's DDS profile travels too: the robot's camera driver needs it for raw frames > 512 KiB
    assert (package / "config" / "fastdds.xml").read_bytes() == (FLEET.parent / "fastdds.xml").read_bytes()
    assert "config/fastdds.xml" in manifest["files"]


def test_params_file_matches_the_fleet_config(package: Path, tiny_bundle: Path):
    """The params file carries exactly the parameters fleet.yaml gives this robot's node."""
    cfg = load_fleet(FLEET, bundle=str(tiny_bundle))
    expected = dict(incident_node_description(cfg, cfg.robot("legged_1")).parameters)
    params = yaml.safe_load((package / "config" / "robot.yaml").read_text())["/**"]["ros__parameters"]
    assert params.pop("bundle") == "bundle"
    expected.pop("bundle")
    assert params == expected


def test_check_passes_on_a_fresh_package(package: Path):
    proc = subprocess.run([*deploy_cli(), "check", str(package)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("manifest", "params", "bundle", "runtime", "engine", "analyze"):
        assert any(line.startswith("ok") and f" {name} " in line + " " for line in proc.stdout.splitlines()), name
    assert "all checks passed" in proc.stdout


def test_check_detects_a_corrupted_model_file(package: Path, tmp_path: Path):
    pkg = _copy(package, tmp_path)
    decoder = pkg / "bundle" / "decoder.onnx"
    data = bytearray(decoder.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    decoder.write_bytes(bytes(data))
    report = check_package(pkg)
    assert not report.ok
    failed = {line.split()[1] for line in report.lines() if line.startswith("FAIL")}
    assert {"manifest", "bundle", "engine"} <= failed, report.lines()
    text = "\n".join(report.failures)
    assert "bundle/decoder.onnx changed" in text
    assert "decoder.onnx does not match its sha256" in text
    assert "sha256 mismatch for decoder.onnx" in text  # the engine itself refuses to load it
    assert deploy_main(["check", str(pkg)]) == 1


def test_check_detects_missing_and_extra_files(package: Path, tmp_path: Path):
    pkg = _copy(package, tmp_path)
    (pkg / "bundle" / "tokenizer.json").unlink()
    (pkg / "bundle" / "notes.txt").write_text("not part of the bundle")
    (pkg / "config" / "robot.yaml").write_text("/**:\n  ros__parameters:\n    robot_type: submarine\n")
    report = check_package(pkg, load_engine=False)
    text = "\n".join(report.failures)
    assert "bundle/tokenizer.json is missing" in text
    assert "bundle/notes.txt is not part of the package" in text
    assert "robot_type 'submarine'" in text and "lacks robot_id" in text


def test_check_never_hashes_a_file_outside_the_bundle(tiny_bundle: Path, tmp_path: Path):
    """bundle.json listing '../secret' made the check hash a file outside the bundle (and call it
    a match); it is refused by name, as the engine refuses it."""
    import json
    import shutil

    from ember.engine.bundle import sha256_file

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    secret = tmp_path / "secret"
    secret.write_text("not the bundle's")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"]["../secret"] = {"sha256": sha256_file(secret)}
    (bundle / "bundle.json").write_text(json.dumps(meta))
    report = check_package(bundle, load_engine=False)
    assert "bundle: file name '../secret' must not contain a path" in report.failures, report.lines()


def test_check_names_the_threads_the_engine_runs(tiny_bundle: Path):
    """--threads 64 on a 2-CPU machine: the engine runs what the process may use; the line says so."""
    from ember.engine.cpus import usable_cpus

    report = check_package(tiny_bundle, threads=64, max_new_tokens=2)
    analyze = next(detail for name, _, detail in report.results if name == "analyze")
    usable = min(64, usable_cpus())
    assert f"({usable} thread{'s' if usable > 1 else ''})" in analyze, analyze


def test_check_a_bare_bundle(tiny_bundle: Path):
    report = check_package(tiny_bundle, max_new_tokens=2)
    assert report.ok, report.lines()
    assert [line.split()[1] for line in report.lines()] == ["bundle", "runtime", "engine", "analyze"]


def test_check_reports_peak_rss_in_mib(tiny_bundle: Path):
    """The analyze line gives the peak RSS in MiB, the unit of bench/edge.py and DEPLOYMENT.md."""
    report = check_package(tiny_bundle, max_new_tokens=2)
    analyze = next(detail for name, _, detail in report.results if name == "analyze")
    assert re.search(r"peak RSS \d+ MiB$", analyze), analyze


def test_run_script_check_uses_the_shipped_code(package: Path, tmp_path: Path):
    """`run.sh check` runs the ember copy in python/ (here with this venv's packages)."""
    pkg = _copy(package, tmp_path)
    (pkg / ".venv").symlink_to(Path(sys.executable).parents[1])  # what `run.sh setup` would create
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        ["bash", str(pkg / "run.sh"), "check", "--max-new-tokens", "2"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    probe = subprocess.run(
        [str(pkg / ".venv" / "bin" / "python"), "-c", "import ember; print(ember.__file__)"],
        capture_output=True, text=True, env={**env, "PYTHONPATH": str(pkg / "python")}, timeout=60,
    )
    assert probe.stdout.strip().startswith(str(pkg / "python")), probe.stdout
    assert check_package(pkg, load_engine=False).ok, "running the package must not dirty its manifest"


def test_run_script_usage_and_syntax(package: Path):
    subprocess.run(["bash", "-n", str(package / "run.sh")], check=True)
    proc = subprocess.run(["bash", str(package / "run.sh"), "bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_run_script_docker_mode_mounts_the_package(package: Path, tmp_path: Path):
    """`run.sh docker` mounts this package and its params where its node arguments point: the package
    folder, not its bundle (a bind mount pins the directory it mounts, and a bundle swapped in on the
    host with ember-deploy swap-bundle was never seen in the container)."""
    stub = tmp_path / "bin" / "docker"  # records the command line instead of running a container
    stub.parent.mkdir()
    stub.write_text('#!/bin/bash\nprintf "%s\\0" "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "ROS_DOMAIN_ID": "17",
           "EMBER_IMAGE": "registry.example/ember-robot:1"}
    out = subprocess.run(["bash", str(package / "run.sh"), "docker"], capture_output=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    args = out.stdout.decode().split("\0")[:-1]
    assert args[0] == "run" and {"--network", "--ipc"} <= set(args)
    volumes = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-v"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in volumes)
    assert all(v.endswith(":ro") for v in volumes)
    assert mounts == {
        str(package): "/opt/ember/package",
        str(package / "config" / "robot.yaml"): "/opt/ember/robot.yaml",
    }
    assert "ROS_DOMAIN_ID=17" in args and "EMBER_ROBOT_ID=legged_1" in args
    image = args.index("registry.example/ember-robot:1")
    assert args[image + 1 : image + 4] == ["ros2", "run", "ember"]
    node = args[image + 4 :]
    assert node[:4] == ["incident_node", "--ros-args", "-r", "__ns:=/legged_1"]
    assert "/opt/ember/robot.yaml" in node and "bundle:=/opt/ember/package/bundle" in node


def test_the_fleets_discovery_server_travels_with_the_package(tiny_bundle: Path, tmp_path: Path):
    """fleet.yaml's discovery_server reached only what ember-fleet and the launch file start: a packaged
    robot (`run.sh ros|docker`) looked for its peers by multicast and never found the fleet."""
    import yaml

    cfg = yaml.safe_load(FLEET.read_text())
    cfg.update(bundle=str(tiny_bundle), dds_profile=str(FLEET.parent / "fastdds.xml"), discovery_server="10.0.0.1:11811")
    cfg["cameras"]["images"] = str(FLEET.parent / cfg["cameras"]["images"])
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(cfg))
    pkg = tmp_path / "drone_1"
    build_package(tiny_bundle, pkg, config_path=fleet, robot_id="drone_1")
    assert "ROS_DISCOVERY_SERVER=10.0.0.1:11811" in (pkg / "robot.env").read_text().splitlines()
    stub = tmp_path / "bin" / "docker"
    stub.parent.mkdir()
    stub.write_text('#!/bin/bash\nprintf "%s\\0" "$@"\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "ROS_DISCOVERY_SERVER"}
    env["PATH"] = f"{stub.parent}:{os.environ['PATH']}"
    out = subprocess.run(["bash", str(pkg / "run.sh"), "docker"], capture_output=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "ROS_DISCOVERY_SERVER=10.0.0.1:11811" in out.stdout.decode().split("\0")


def test_package_refusals(tiny_bundle: Path, tmp_path: Path):
    with pytest.raises(PackageError, match="robot 'nobody' is not in"):
        build_package(tiny_bundle, tmp_path / "a", FLEET, robot_id="nobody")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "important.txt").write_text("keep me")
    with pytest.raises(PackageError, match="exists and is not empty"):
        build_package(tiny_bundle, busy, FLEET)
    with pytest.raises(PackageError, match="not an Ember package"):
        build_package(tiny_bundle, busy, FLEET, force=True)
    assert (busy / "important.txt").read_text() == "keep me"
    broken = tmp_path / "broken_bundle"
    shutil.copytree(tiny_bundle, broken)
    (broken / "vision.onnx").write_bytes(b"not a model")
    with pytest.raises(PackageError, match="refusing to package .*sha256 mismatch for vision.onnx"):
        build_package(broken, tmp_path / "b", FLEET)
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder may be left behind"


def test_package_force_replaces_an_old_package(tiny_bundle: Path, tmp_path: Path):
    first = build_package(tiny_bundle, tmp_path / "pkg", FLEET, robot_id="drone_1")
    second = build_package(tiny_bundle, tmp_path / "pkg", FLEET, robot_id="underwater_1", force=True)
    assert first.path == second.path and second.robot_type == "underwater"
    assert "EMBER_ROBOT_ID=underwater_1" in (second.path / "robot.env").read_text()
    assert check_package(second.path, load_engine=False).ok


def test_package_force_keeps_the_environment_run_sh_setup_installed(tiny_bundle: Path, tmp_path: Path, capsys):
    """Re-packaging a robot's package in place (the documented rollout) keeps its .venv: without it the
    next (re)start of `run.sh serve` fails until `run.sh setup` reinstalls from PyPI, which an
    offline robot cannot. A changed requirements.txt is said, so the operator knows to run setup."""
    pkg = build_package(tiny_bundle, tmp_path / "pkg", FLEET, robot_id="drone_1").path
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(pkg / ".venv")], check=True)
    marker = pkg / ".venv" / "installed-by-setup"
    marker.write_text("x")
    inode = (pkg / ".venv").stat().st_ino

    assert deploy_main(["package", "--bundle", str(tiny_bundle), "--out", str(pkg), "--config", str(FLEET),
                       "--robot-id", "drone_1", "--force"]) == 0
    out = capsys.readouterr().out
    assert marker.read_text() == "x" and (pkg / ".venv").stat().st_ino == inode, "the package's .venv was dropped"
    assert "kept its .venv" in out and "requirements changed" not in out, out
    assert check_package(pkg, load_engine=False).ok  # .venv is not a package file

    (pkg / "requirements.txt").write_text("numpy==1.0\n")  # the old package pinned something else
    assert deploy_main(["package", "--bundle", str(tiny_bundle), "--out", str(pkg), "--config", str(FLEET),
                       "--robot-id", "drone_1", "--force"]) == 0
    out = capsys.readouterr().out
    assert marker.is_file() and re.search(r"requirements changed: run \S*run\.sh setup again", out), out


def test_serve_and_deploy_stay_torch_free():
    code = (
        "import sys, ember.serve.app, ember.serve.images, ember.serve.guard, ember.deploy.cli, "
        "ember.deploy.check, ember.deploy.package, ember.deploy.health;"
        "bad = sorted(m for m in ('torch', 'timm', 'transformers', 'torchvision') if m in sys.modules);"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize(
    "text",
    ["/**:\n  ros__parameters:\n", "/**:\n  ros__parameters: [robot_id, robot_type]\n", "just a string\n", ""],
    ids=["empty-params", "params-a-list", "a-string", "empty-file"],
)
def test_check_reports_a_broken_params_file_instead_of_crashing(package: Path, tmp_path: Path, text: str):
    pkg = _copy(package, tmp_path)
    (pkg / "config" / "robot.yaml").write_text(text)
    report = check_package(pkg, load_engine=False)
    assert [line.split()[:2] for line in report.lines() if " params " in line + " "] == [["FAIL", "params"]]
    assert "config/robot.yaml" in "\n".join(report.failures)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--threads", "0"], "--threads: must be an integer >= 1, not '0'"),
        (["--threads", "-3"], "--threads: must be an integer >= 1, not '-3'"),
        (["--max-new-tokens", "0"], "--max-new-tokens: must be an integer >= 1, not '0'"),
        (["--max-new-tokens", "many"], "--max-new-tokens: must be an integer >= 1, not 'many'"),
    ],
    ids=["zero-threads", "negative-threads", "zero-tokens", "text-tokens"],
)
def test_check_refuses_nonsense_numbers(tiny_bundle: Path, capsys, args, fragment):
    """`check --threads -3` used to pass and print '-3 thread(s)' (the engine silently took 1)."""
    with pytest.raises(SystemExit) as exc:
        deploy_main(["check", str(tiny_bundle), *args])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


def test_a_package_that_cannot_be_written_is_one_line(tiny_bundle: Path, tmp_path: Path, capsys):
    """An output under a regular file (a typo), a full or read-only disk: one line and exit 2, no traceback."""
    (tmp_path / "robots").write_text("a file, not a folder")
    rc = deploy_main(["package", "--bundle", str(tiny_bundle), "--config", str(FLEET), "--out", str(tmp_path / "robots" / "drone_1")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("ember-deploy package: cannot write the package") and "\n" not in err, err
    assert "robots" in err
