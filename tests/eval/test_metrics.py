"""The metric functions against values computed by hand (and scikit-learn where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from ember.eval.metrics import (
    NO_INCIDENT,
    average_precision,
    confusion,
    incident_metrics,
    latency_summary,
    robot_selection_metrics,
)

# drone 0, humanoid 1, wheeled 2, legged 3, underwater 4
GOLD = [{"drone"}, {"drone", "legged"}, {"underwater"}, {"humanoid", "wheeled"}, {"legged"}]
PRED = [["drone"], ["legged", "drone"], ["drone"], ["humanoid"], ["wheeled", "legged"]]
SCORES = [
    [0.9, 0.1, 0.1, 0.2, 0.1],
    [0.6, 0.1, 0.1, 0.8, 0.1],
    [0.7, 0.1, 0.1, 0.1, 0.4],
    [0.1, 0.9, 0.3, 0.1, 0.1],
    [0.1, 0.1, 0.8, 0.6, 0.1],
]


def test_robot_selection_metrics_by_hand():
    m = robot_selection_metrics(GOLD, PRED, scores=SCORES)
    assert m["n"] == 5
    assert m["exact_match"] == pytest.approx(2 / 5)
    assert m["jaccard"] == pytest.approx((1 + 1 + 0 + 0.5 + 0.5) / 5)
    assert m["samples_f1"] == pytest.approx((1 + 1 + 0 + 2 / 3 + 2 / 3) / 5)
    assert m["top1_hit"] == pytest.approx(3 / 5)  # drone yes, legged yes, drone no, humanoid yes, wheeled no
    # TP 5 (drone 2, humanoid 1, legged 2), FP 2 (drone, wheeled), FN 2 (wheeled, underwater)
    assert m["micro_precision"] == pytest.approx(5 / 7)
    assert m["micro_recall"] == pytest.approx(5 / 7)
    assert m["micro_f1"] == pytest.approx(5 / 7)
    pr = m["per_robot"]
    assert (pr["drone"]["precision"], pr["drone"]["recall"], pr["drone"]["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (pr["humanoid"]["precision"], pr["humanoid"]["recall"], pr["humanoid"]["f1"]) == (1.0, 1.0, 1.0)
    assert (pr["wheeled"]["precision"], pr["wheeled"]["recall"], pr["wheeled"]["f1"]) == (0.0, 0.0, 0.0)
    assert (pr["legged"]["tp"], pr["legged"]["fp"], pr["legged"]["fn"], pr["legged"]["f1"]) == (2, 0, 0, 1.0)
    assert pr["underwater"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0,
                                "tp": 0, "fp": 0, "fn": 1}
    assert m["macro_f1"] == pytest.approx((0.8 + 1 + 0 + 1 + 0) / 5) and m["macro_f1_robots"] == 5
    assert m["macro_precision"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)  # underwater's is undefined
    assert m["macro_recall"] == pytest.approx(3 / 5)
    assert m["hamming_accuracy"] == pytest.approx(21 / 25)
    assert m["mean_predicted_set_size"] == pytest.approx(7 / 5)


def test_top1_from_scores_order_or_explicit_and_undefined_f1():
    by_order = robot_selection_metrics(GOLD, PRED)  # first predicted element is the best
    assert by_order["top1_hit"] == pytest.approx(3 / 5)
    explicit = robot_selection_metrics(GOLD, PRED, top1=[0, 0, 4, 2, 3])  # all five in gold
    assert explicit["top1_hit"] == 1.0
    # scores decide top-1 even against the predicted order
    flipped = robot_selection_metrics(GOLD, PRED, scores=np.eye(5)[[4, 4, 4, 4, 4]])
    assert flipped["top1_hit"] == pytest.approx(1 / 5)
    # robots never gold and never predicted have no F1 and stay out of the macro average
    only_drone = robot_selection_metrics([[0], [0]], [[0], [0, 1]])
    assert only_drone["per_robot"]["wheeled"]["f1"] is None
    assert only_drone["per_robot"]["humanoid"]["f1"] == 0.0
    assert only_drone["macro_f1"] == pytest.approx(0.5) and only_drone["macro_f1_robots"] == 2


@pytest.mark.parametrize(
    ("gold", "pred", "kwargs", "message"),
    [
        ([], [], {}, "no rows"),
        ([[0]], [[0], [1]], {}, "1 gold sets but 2 predictions"),
        ([["jetpack"]], [[0]], {}, "unknown robot type 'jetpack'"),
        ([[]], [[0]], {}, "row 0 has an empty gold robot set"),
        ([[0]], [[7]], {}, "out of range"),
        ([[0]], [[0]], {"scores": [[1, 2]]}, "scores must have shape"),
    ],
)
def test_robot_selection_metrics_refuse_bad_input(gold, pred, kwargs, message):
    with pytest.raises(ValueError, match=message):
        robot_selection_metrics(gold, pred, **kwargs)


def test_average_precision_by_hand():
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # a tie forms one threshold: (0.5, 0.5) has precision 1/2 at recall 1/2
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([1, 1], [0.1, 0.2]) == 1.0
    assert average_precision([0, 0], [0.1, 0.2]) is None


def test_incident_metrics_and_confusion_by_hand():
    gold = [["on fire", "with smoke"], ["flooded"], []]
    labels = [["with smoke", "on fire", "flooded"], ["on fire", "fog", "flooded"], ["flooded", "on fire"]]
    scores = [[0.9, 0.8, 0.1], [0.7, 0.6, 0.5], [0.6, 0.2]]
    m = incident_metrics(gold, labels, scores, k=2)
    assert (m["n_frames"], m["n_with_incident"]) == (3, 2)
    assert m["top1"] == 0.5 and m["top2"] == 0.5  # frame 1's flooded is third
    assert incident_metrics(gold, labels, scores)["top5"] == 1.0
    # on fire: f0 .8 > f1 .7 > f2 .2 -> AP 1; with smoke: AP 1; flooded: f2 .6 (neg) before f1 .5 -> AP 1/2
    assert m["per_class"] == {"flooded": {"ap": 0.5, "support": 1}, "on fire": {"ap": 1.0, "support": 1},
                              "with smoke": {"ap": 1.0, "support": 1}}
    assert m["mAP"] == pytest.approx(2.5 / 3) and m["mAP_classes"] == 3
    rows, cols, matrix = confusion(gold, [x[0] for x in labels])
    assert rows == ["flooded", "with smoke", NO_INCIDENT]
    assert cols == ["flooded", "on fire", "with smoke"]
    assert matrix.tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="unknown incident label 'alien'"):
        incident_metrics([["alien"]], [["flooded"]], [[1.0]])
    with pytest.raises(ValueError, match="no frames"):
        incident_metrics([], [], [])


def test_a_predicted_label_outside_the_label_list_is_a_clear_error():
    # e.g. `ember-eval bag --live --connect NS` to a node whose model has another label list
    with pytest.raises(ValueError, match="frame 1: the prediction names incident label 'alien'"):
        incident_metrics([["flooded"], ["flooded"]], [["flooded"], ["alien", "flooded"]], [[0.9], [0.8, 0.1]])


def test_latency_summary_by_hand():
    s = latency_summary([10, 20, 30, 40])
    assert (s["n"], s["mean"], s["max"], s["p50"]) == (4, 25.0, 40.0, 25.0)
    assert s["p90"] == pytest.approx(37.0) and s["p99"] == pytest.approx(39.7)
    assert latency_summary([])["p50"] is None


def test_agrees_with_scikit_learn_on_random_data():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    G = rng.random((60, 5)) < 0.35
    G[np.arange(60), rng.integers(0, 5, 60)] = True  # no empty gold set
    P = rng.random((60, 5)) < 0.4
    m = robot_selection_metrics([np.flatnonzero(g) for g in G], [np.flatnonzero(p) for p in P])
    assert m["micro_f1"] == pytest.approx(sk.f1_score(G, P, average="micro"))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(G, P, average="macro"))
    assert m["samples_f1"] == pytest.approx(sk.f1_score(G, P, average="samples", zero_division=0))
    assert m["exact_match"] == pytest.approx(sk.accuracy_score(G, P))
    assert m["jaccard"] == pytest.approx(sk.jaccard_score(G, P, average="samples", zero_division=1))
    for _ in range(20):
        y, s = rng.random(30) < 0.3, np.round(rng.random(30), 1)
        if y.any():
            assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s))
