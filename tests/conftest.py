"""Shared test setup: DDS isolation for every test session and worker, shared fixtures."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"


def _session_domain_id() -> int:
    """A ROS_DOMAIN_ID of this session's own (per xdist worker too), in 1..100."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").lstrip("gw") or "0"
    return 1 + (os.getpid() * 7 + int(worker) * 13) % 100


# Set before anything can start DDS; child processes inherit it.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(_session_domain_id()))
os.environ["EMBER_REQUIRE_LOCAL_DDS"] = "1"
os.environ.setdefault("ROS_LOG_DIR", str(ROOT / "build" / "ros_log"))

# Child processes start with default signal dispositions, as under systemd or docker. A shell that
# started pytest in the background (`nohup`, `cmd &` in a script) leaves SIGHUP / SIGINT ignored,
# every child inherits that, and bash cannot trap a signal ignored on entry: run.sh's stop tests
# would wait for a stop that never comes. (Python nodes install their own handlers either way.)
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _dds_isolated():
    """Every test runs with loopback-only discovery and a session domain id."""
    assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST", "DDS must stay on loopback"
    assert os.environ.get("ROS_DOMAIN_ID", "").isdigit(), "ROS_DOMAIN_ID missing"
    yield


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch intra-op thread in the test process: tiny models on a 2-core machine run
    10-40x slower when two OpenMP threads spin against other work. (Robot-side code is checked
    for never importing torch in subprocesses; a robot-only install has no torch at all.)"""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (robot-selection files, incident categories and photos)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: tests need the shared data beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny random-weight EmberVLM exported to an INT8 bundle, built once per session (seconds).

    Shared by every test: copy it (shutil.copytree) before changing any file in it.
    """
    from ember_training.testing import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny_bundle") / "bundle")
