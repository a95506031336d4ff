"""The engine as a robot runs it: CPUs it may use, a bundle onnxruntime cannot load, odd frames.

Latency and memory figures are in bench/edge_runtime.py (ratios in one run, never timed here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from ember.engine import BundleError, EmberEngine
from ember.engine.bundle import sha256_file
from ember.engine.cpus import affinity_cpus, cgroup_cpu_limit
from ember.engine.engine import session_options

PINNED = r"""
import json, logging, os, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # as `taskset -c 0` would
import numpy as np
from ember.engine import EmberEngine
before = len(os.listdir("/proc/self/task"))
engine = EmberEngine(sys.argv[1], threads=int(sys.argv[2]))
after = len(os.listdir("/proc/self/task"))
a = engine.analyze(np.zeros((48, 64, 3), np.uint8), "Find people", max_new_tokens=2)
print(json.dumps({"threads": getattr(engine, "threads", None), "new_threads": after - before,
                  "tokens": a.num_generated_tokens}))
"""


def _pinned(bundle, threads: int) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-c", PINNED, str(bundle), str(threads)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_threads_are_capped_to_the_cpus_the_process_may_use(tiny_bundle):
    """`taskset -c 0` (or --cpuset-cpus) with threads: 4 in the params: onnxruntime must not start
    intra-op pools whose threads all wait for the one CPU; the engine says what it did."""
    result, stderr = _pinned(tiny_bundle, 4)
    assert result["threads"] == 1
    assert result["new_threads"] == 0  # no intra-op pool threads in either session
    assert "threads=4" in stderr and "1 CPU" in stderr
    quiet, stderr = _pinned(tiny_bundle, 1)
    assert quiet["threads"] == 1 and quiet["new_threads"] == 0 and "threads=" not in stderr


def test_more_threads_than_cpus_is_capped_in_process(tiny_bundle):
    engine = EmberEngine(tiny_bundle, threads=affinity_cpus() + 3)
    assert 1 <= engine.threads <= affinity_cpus()


def test_pool_threads_sleep_instead_of_spinning():
    """The robot's CPU is shared with its other software: idle intra-op threads must not busy-wait."""
    assert session_options(2).get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _write(path, files: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (path / name).write_text(value)


def test_cgroup_v2_quota_is_the_smallest_along_the_path(tmp_path):
    _write(tmp_path / "robot.slice", {"cpu.max": "150000 100000\n"})
    _write(tmp_path / "robot.slice" / "ember.service", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit("0::/robot.slice/ember.service\n", tmp_path) == 1.5
    _write(tmp_path / "robot.slice" / "ember.service", {"cpu.max": "50000 100000\n"})
    assert cgroup_cpu_limit("0::/robot.slice/ember.service\n", tmp_path) == 0.5
    _write(tmp_path, {"cpu.max": "200000 100000\n"})  # a container's own namespace: its limit at the root
    assert cgroup_cpu_limit("0::/\n", tmp_path) == 2.0


def test_cgroup_v1_quota_and_unlimited_or_unreadable(tmp_path):
    _write(tmp_path / "cpu,cpuacct" / "docker" / "abc", {"cpu.cfs_quota_us": "100000\n", "cpu.cfs_period_us": "100000\n"})
    text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    assert cgroup_cpu_limit(text, tmp_path) == 1.0
    _write(tmp_path / "cpu,cpuacct" / "docker" / "abc", {"cpu.cfs_quota_us": "-1\n"})
    assert cgroup_cpu_limit(text, tmp_path) is None
    _write(tmp_path / "cpu,cpuacct" / "docker" / "abc", {"cpu.cfs_quota_us": "garbage\n"})
    assert cgroup_cpu_limit(text, tmp_path) is None
    assert cgroup_cpu_limit("", tmp_path) is None
    assert cgroup_cpu_limit("0::/nowhere\n", tmp_path / "missing") is None


# -- a bundle onnxruntime cannot load ----------------------------------------------------------


def _rehash(bundle) -> None:
    """Make bundle.json match the files again: what a broken exporter (or a hand re-hash) ships."""
    meta = json.loads((bundle / "bundle.json").read_text())
    for name, entry in meta["files"].items():
        entry["sha256"] = sha256_file(bundle / name)
        entry["bytes"] = (bundle / name).stat().st_size
    (bundle / "bundle.json").write_text(json.dumps(meta))


def _newer_opset(bundle):
    import onnx

    model = onnx.load(str(bundle / "vision.onnx"))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 40
    onnx.save(model, str(bundle / "vision.onnx"))


def _newer_ir(bundle):
    import onnx

    model = onnx.load(str(bundle / "decoder.onnx"))
    model.ir_version = 99
    onnx.save(model, str(bundle / "decoder.onnx"))


def _truncated(bundle):
    data = (bundle / "decoder.onnx").read_bytes()
    (bundle / "decoder.onnx").write_bytes(data[: len(data) // 2])


def _empty(bundle):
    (bundle / "vision.onnx").write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "names"),
    [
        (_newer_opset, ("vision.onnx", "opset 40")),
        (_newer_ir, ("decoder.onnx", "IR version")),
        (_truncated, ("decoder.onnx", "truncated or corrupt")),
        (_empty, ("vision.onnx", "truncated or corrupt")),
    ],
    ids=["newer-opset", "newer-ir-version", "truncated", "empty"],
)
def test_a_model_file_onnxruntime_cannot_load_is_a_one_line_bundle_error(tiny_bundle, tmp_path, damage, names):
    """With matching hashes (a newer exporter, a re-hashed copy): one line that names the file, says
    what is wrong and which onnxruntime runs here, without onnxruntime's C++ source paths."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    damage(bundle)
    _rehash(bundle)
    with pytest.raises(BundleError) as info:
        EmberEngine(bundle)
    message = str(info.value)
    assert "\n" not in message.strip()
    assert "onnxruntime_src" not in message and "onnxruntime::" not in message
    assert all(n in message for n in names), message
    assert f"onnxruntime {ort.__version__}" in message
    assert len(message) < 600


# -- frames of every size ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_bundle) -> EmberEngine:
    return EmberEngine(tiny_bundle, threads=1)


def test_huge_and_strided_frames(engine):
    """A 10000x10000 frame is shrunk in bounded memory; views (BGR->RGB flip, crops) are accepted."""
    big = np.zeros((10000, 10000, 3), np.uint8)
    big[::5] = 200
    a = engine.analyze(big, "Find people", max_new_tokens=1)
    assert a.num_generated_tokens <= 1
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    flipped = frame[:, :, ::-1]
    same = engine.analyze(np.ascontiguousarray(flipped), "Find people", max_new_tokens=2)
    assert engine.analyze(flipped, "Find people", max_new_tokens=2).text == same.text
    assert engine.analyze(frame[100:101, :, :], max_new_tokens=1).num_generated_tokens <= 1


def test_second_tokenizer_only_for_tasks_that_spell_special_tokens(tiny_bundle):
    """The copy of the tokenizer that encodes special-token strings as text (~1.2 MiB resident with
    the robots' bundle) is built on the first such task, not carried by every robot from the start."""
    engine = EmberEngine(tiny_bundle, threads=1)
    engine.analyze(np.zeros((48, 64, 3), np.uint8), "Find people near the fire.", max_new_tokens=1)
    assert "_plain_tokenizer" not in vars(engine)
    special = engine.meta["special_token_ids"]
    ids = engine._prompt_ids("Find <|endoftext|> people", 4)
    assert [i for i in ids if i in set(special.values())] == [special["<image>"], special["<reasoning>"]]
    assert "_plain_tokenizer" in vars(engine)
