"""Evaluation helpers: robot thresholds and the engine's selection rule."""

from __future__ import annotations

import numpy as np

from ember_training.evaluate import robot_thresholds, select


def test_thresholds_separate_scores_and_default_without_positives():
    probs = np.array([[0.9, 0.2, 0.1, 0.3, 0.1], [0.8, 0.3, 0.1, 0.7, 0.1], [0.2, 0.25, 0.1, 0.75, 0.1]])
    labels = np.array([[1, 0, 0, 0, 0], [1, 0, 0, 1, 0], [0, 0, 0, 1, 0]])
    th = robot_thresholds(probs, labels)
    assert 0.2 < th[0] <= 0.8 and 0.3 < th[3] <= 0.7
    assert th[1] == th[2] == th[4] == 0.5
    assert (select(probs, th) == (labels == 1)).all()


def test_selection_falls_back_to_the_top_robot():
    chosen = select(np.array([[0.1, 0.3, 0.2, 0.1, 0.05]]), [0.5] * 5)
    assert chosen.tolist() == [[False, True, False, False, False]]
