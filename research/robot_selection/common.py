"""Shared helpers of the robot-selection research scripts (data, folds, teacher cache)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("EMBER_ROBOT_DATA", ROOT.parent / "shared/data/robot_selection/single_robot_selection.json"))
CACHE = Path(__file__).resolve().parent / "cache"

from ember_training.robot_selection.folds import grouped_folds, split  # noqa: E402
from ember_training.robot_selection.metrics import mean_std, select, set_metrics  # noqa: E402
from ember_training.robot_selection.tasks import load_tasks  # noqa: E402


def data():
    tasks = load_tasks(DATA)
    folds = grouped_folds([t.task for t in tasks], [t.robots for t in tasks])
    Y = np.zeros((len(tasks), 5), np.float32)
    for i, t in enumerate(tasks):
        Y[i, list(t.robots)] = 1
    return tasks, folds, Y


def teacher():
    from ember_training.robot_selection.teacher import MiniLMTeacher
    return MiniLMTeacher(CACHE / "minilm.npz")


def report(name, rows):
    ms = mean_std(rows)
    line = " ".join(f"{k}={v['mean']:.3f}±{v['std']:.3f}" for k, v in ms.items())
    print(f"{name:40s} {line}", flush=True)
    return ms


__all__ = ["data", "teacher", "report", "split", "select", "set_metrics", "np"]
