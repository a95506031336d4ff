"""Fixtures of the robot-selection tests: the real tasks and a fast stand-in for the MiniLM teacher."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest


class FakeTeacher:
    """Deterministic bag-of-hashed-words vectors (384-d, unit norm): the teacher's interface, no model.
    Records every text it embedded (leakage checks)."""

    def __init__(self, *_args, **_kwargs) -> None:
        self.seen: list[str] = []

    def embed(self, texts):
        self.seen.extend(texts)
        out = np.zeros((len(texts), 384), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()) or ["."]:
                h = int(hashlib.md5(w.encode()).hexdigest()[:8], 16)
                out[i, h % 384] += 1.0
                out[i, (h // 384) % 384] -= 0.5
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return out


@pytest.fixture
def fake_teacher():
    return FakeTeacher()


@pytest.fixture(scope="module")
def tasks(shared_data):
    from ember_training.robot_selection.tasks import load_tasks

    return load_tasks(shared_data / "robot_selection" / "single_robot_selection.json")
