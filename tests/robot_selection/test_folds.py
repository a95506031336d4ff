"""Grouped folds of the robot-selection CV: identical task texts share a fold; deterministic."""

from __future__ import annotations

from collections import Counter

import pytest

from ember_training.robot_selection.folds import grouped_folds, inner_folds, normalize_task, split
from ember_training.robot_selection.tasks import load_tasks


def test_normalize_groups_quote_and_case_variants():
    a = normalize_task("Task: Inspect a high-rise building\u2019s exterior for damage.")
    b = normalize_task("Inspect a high-rise buildings exterior for damage")
    assert a == b
    assert normalize_task("Drive  ACROSS a desert.") == normalize_task("drive across a desert")


def test_real_data_joined(tasks, shared_data):
    assert len(tasks) == 198
    assert all(t.robots and len(t.steps) == 4 for t in tasks)
    # the multi-robot file alone yields the same tasks and sets
    multi = load_tasks(shared_data / "robot_selection" / "multi_robot_selection_dataset.json")
    assert [t.robots for t in multi] == [t.robots for t in tasks]


def test_identical_texts_share_a_fold_and_folds_are_balanced(tasks):
    texts = [t.task for t in tasks]
    folds = grouped_folds(texts, [t.robots for t in tasks], k=5, seed=0)
    by_text: dict[str, set[int]] = {}
    for text, f in zip(texts, folds, strict=False):
        by_text.setdefault(normalize_task(text), set()).add(f)
    assert all(len(fs) == 1 for fs in by_text.values())
    assert sum(1 for t in texts if Counter(map(normalize_task, texts))[normalize_task(t)] > 1) >= 8  # duplicates exist
    sizes = Counter(folds)
    assert sorted(sizes) == [0, 1, 2, 3, 4] and max(sizes.values()) - min(sizes.values()) <= 2
    for f in range(5):
        train, test = split(folds, f)
        assert not {normalize_task(texts[i]) for i in train} & {normalize_task(texts[i]) for i in test}


def test_folds_are_deterministic_and_seeded(tasks):
    texts = [t.task for t in tasks]
    labels = [t.robots for t in tasks]
    a = grouped_folds(texts, labels, 5, 0)
    assert a == grouped_folds(list(texts), list(labels), 5, 0)
    assert a != grouped_folds(texts, labels, 5, 1)
    # independent of row order: a task keeps its fold when the rows are shuffled
    order = list(range(len(texts)))[::-1]
    b = grouped_folds([texts[i] for i in order], [labels[i] for i in order], 5, 0)
    assert [b[order.index(i)] for i in range(len(texts))] == a


def test_inner_folds_cover_only_the_subset(tasks):
    texts = [t.task for t in tasks]
    labels = [t.robots for t in tasks]
    folds = grouped_folds(texts, labels)
    train, _ = split(folds, 0)
    inner = inner_folds(texts, labels, train, 4, 0)
    assert len(inner) == len(train) and set(inner) == {0, 1, 2, 3}


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        grouped_folds(["a", "b"], k=1)
    with pytest.raises(ValueError):
        grouped_folds(["same", "same", "same"], k=2)
