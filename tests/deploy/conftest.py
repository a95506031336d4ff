"""Fixtures of the deployment tests: the real engine on the session's tiny bundle, test images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT

FLEET = ROOT / "config" / "fleet.yaml"


def deploy_cli() -> list[str]:
    """The `ember-deploy` command of this venv (or its module, where no script is installed)."""
    exe = Path(sys.executable).parent / "ember-deploy"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "ember.deploy.cli"]


@pytest.fixture(scope="module")
def package(tiny_bundle: Path, tmp_path_factory) -> Path:
    """A package for legged_1 built through the real `ember-deploy` command."""
    out = tmp_path_factory.mktemp("deploy") / "legged_1"
    proc = subprocess.run(
        [*deploy_cli(), "package", "--bundle", str(tiny_bundle), "--out", str(out), "--config", str(FLEET),
         "--robot-id", "legged_1"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "robot legged_1 (legged)" in proc.stdout
    return out


class RecordingEngine:
    """The real EmberEngine, with a record of every image handed to `analyze`.

    Lets the tests prove that no request that was refused ever reached the model.
    """

    def __init__(self, engine) -> None:
        self.engine = engine
        self.metadata = getattr(engine, "metadata", None) or engine.meta
        self.images: list[np.ndarray] = []

    def analyze(self, image, task=None, max_new_tokens=None):
        self.images.append(image)
        return self.engine.analyze(image, task=task, max_new_tokens=max_new_tokens)


@pytest.fixture(scope="session")
def engine(tiny_bundle: Path):
    """One real EmberEngine on the tiny bundle for the whole session."""
    from ember.engine import EmberEngine

    return EmberEngine(tiny_bundle, threads=1)


@pytest.fixture(scope="session")
def photo_path(shared_data: Path) -> Path:
    """A real incident photo (JPEG) from ../shared/data/incidents/images."""
    path = shared_data / "incidents" / "images" / "example_fire.jpg"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def photo_jpeg(photo_path: Path) -> bytes:
    return photo_path.read_bytes()


@pytest.fixture(scope="session")
def scene_png() -> bytes:
    """A small generated scene as PNG (sky over a burning building)."""
    img = np.full((96, 128, 3), (200, 170, 120), np.uint8)
    cv2.rectangle(img, (30, 40), (90, 95), (60, 60, 60), -1)
    cv2.circle(img, (60, 35), 18, (0, 80, 255), -1)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()
