"""Fixtures shared by the fleet tests."""

from __future__ import annotations

import pytest

from ember.engine.robot_selector import SELECTOR_FILE, RobotSelector
from ember.labels import ROBOT_TYPES
from ember_training.robot_selection.selector import save_selector, train_selector
from tests.robot_selection.conftest import FakeTeacher
from tests.robot_selection.test_selector import SMALL

UNDERWATER = ROBOT_TYPES.index("underwater")


@pytest.fixture(scope="module")
def selector_bundle(shared_data, tmp_path_factory):
    """A tiny bundle whose text robot selector is trained on the 198 real tasks (fast stand-in teacher)."""
    from ember_training.robot_selection.tasks import load_tasks
    from ember_training.testing import build_tiny_bundle

    tasks = load_tasks(shared_data / "robot_selection" / "single_robot_selection.json")
    arrays, _ = train_selector(tasks, SMALL, 0, FakeTeacher())
    path = save_selector(arrays, tmp_path_factory.mktemp("selector") / SELECTOR_FILE)
    bundle = build_tiny_bundle(tmp_path_factory.mktemp("text_bundle") / "bundle", robot_selector=path)
    selector = RobotSelector(bundle / SELECTOR_FILE, len(ROBOT_TYPES))
    # an underwater task of the data that this selector gets right: the camera reports say otherwise
    task = next(t.task for t in tasks if t.robots == (UNDERWATER,) and selector.select(t.task).chosen == [UNDERWATER])
    return bundle, selector, task
