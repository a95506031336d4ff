"""Evaluation metrics as pure functions of gold labels and predictions (numpy only).

Everything that reports a figure (bag evaluation, robot-selection evaluation, the
cross-validation of issue 7) computes it here, so one definition holds everywhere.

Conventions:
* robot sets are iterables of robot indices or ids (ember.labels order);
* a per-robot precision is None when the robot was never predicted, a recall None when it
  is never in a gold set, an F1 (2tp / (2tp + fp + fn)) None when both; macro averages
  are over the robots whose value is defined and say how many that was;
* Jaccard of two empty sets is 1 (cannot happen with gold sets, which are never empty).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ember.labels import INCIDENT_LABELS, NUM_ROBOT_TYPES, ROBOT_TYPES, robot_index

PERCENTILES = (50, 90, 95, 99)


def _index_set(robots: Iterable[int | str]) -> set[int]:
    out = set()
    for r in robots:
        i = int(r) if isinstance(r, (int, np.integer)) else robot_index(str(r))
        if not 0 <= i < NUM_ROBOT_TYPES:
            raise ValueError(f"robot index {i} out of range 0..{NUM_ROBOT_TYPES - 1}")
        out.add(i)
    return out


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def _mean_defined(values: Iterable[float | None]) -> tuple[float | None, int]:
    vals = [v for v in values if v is not None]
    return (float(np.mean(vals)) if vals else None), len(vals)


def robot_selection_metrics(
    gold: Sequence[Iterable[int | str]],
    pred: Sequence[Iterable[int | str]],
    scores: np.ndarray | Sequence[Sequence[float]] | None = None,
    top1: Sequence[int | str] | None = None,
) -> dict:
    """All robot-selection metrics from gold sets and predicted sets.

    `scores` ([N, 5], fixed robot order) or `top1` (the best-ranked robot per row) give
    top1_hit: the share of rows whose highest-scored robot is in the gold set. Without
    either, the first element of each predicted sequence is taken as its best.
    Raises ValueError for no rows, mismatched lengths or an empty gold set.
    """
    n = len(gold)
    if n == 0:
        raise ValueError("no rows to evaluate")
    if len(pred) != n:
        raise ValueError(f"{n} gold sets but {len(pred)} predictions")
    pred_lists = [list(p) for p in pred]
    gold_sets = [_index_set(g) for g in gold]
    pred_sets = [_index_set(p) for p in pred_lists]
    for i, g in enumerate(gold_sets):
        if not g:
            raise ValueError(f"row {i} has an empty gold robot set")
    if scores is not None:
        arr = np.asarray(scores, dtype=np.float64)
        if arr.shape != (n, NUM_ROBOT_TYPES):
            raise ValueError(f"scores must have shape ({n}, {NUM_ROBOT_TYPES}), got {arr.shape}")
        best = [int(np.argmax(row)) for row in arr]
    elif top1 is not None:
        if len(top1) != n:
            raise ValueError(f"{n} gold sets but {len(top1)} top-1 robots")
        best = [next(iter(_index_set([t]))) for t in top1]
    else:
        best = [next(iter(_index_set(p[:1])), -1) for p in pred_lists]

    exact = np.mean([g == p for g, p in zip(gold_sets, pred_sets, strict=True)])
    jaccard = np.mean([len(g & p) / len(g | p) if g | p else 1.0 for g, p in zip(gold_sets, pred_sets, strict=True)])
    samples_f1 = np.mean([2 * len(g & p) / (len(g) + len(p)) for g, p in zip(gold_sets, pred_sets, strict=True)])
    top1_hit = np.mean([b in g for b, g in zip(best, gold_sets, strict=True)])

    G = np.array([[r in g for r in range(NUM_ROBOT_TYPES)] for g in gold_sets], dtype=bool)
    P = np.array([[r in p for r in range(NUM_ROBOT_TYPES)] for p in pred_sets], dtype=bool)
    tp, fp, fn = (G & P).sum(0), (~G & P).sum(0), (G & ~P).sum(0)
    per_robot = {}
    for r, rid in enumerate(ROBOT_TYPES):
        per_robot[rid] = {
            "precision": _ratio(tp[r], tp[r] + fp[r]),
            "recall": _ratio(tp[r], tp[r] + fn[r]),
            "f1": _ratio(2 * tp[r], 2 * tp[r] + fp[r] + fn[r]),
            "support": int(G[:, r].sum()),
            "predicted": int(P[:, r].sum()),
            "tp": int(tp[r]),
            "fp": int(fp[r]),
            "fn": int(fn[r]),
        }
    macro_f1, n_f1 = _mean_defined(v["f1"] for v in per_robot.values())
    macro_p, _ = _mean_defined(v["precision"] for v in per_robot.values())
    macro_r, _ = _mean_defined(v["recall"] for v in per_robot.values())
    TP, FP, FN = int(tp.sum()), int(fp.sum()), int(fn.sum())
    return {
        "n": n,
        "exact_match": float(exact),
        "jaccard": float(jaccard),
        "samples_f1": float(samples_f1),
        "top1_hit": float(top1_hit),
        "micro_precision": _ratio(TP, TP + FP),
        "micro_recall": _ratio(TP, TP + FN),
        "micro_f1": _ratio(2 * TP, 2 * TP + FP + FN),
        "macro_precision": macro_p,
        "macro_recall": macro_r,
        "macro_f1": macro_f1,
        "macro_f1_robots": n_f1,
        "hamming_accuracy": float((G == P).mean()),
        "mean_predicted_set_size": float(P.sum(1).mean()),
        "per_robot": per_robot,
    }


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision of binary `labels` ranked by `scores` (ties form one threshold, as in
    scikit-learn): sum over distinct thresholds of (R_k - R_{k-1}) * P_k. None without positives."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    cum_tp = np.cumsum(y)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tp = cum_tp[last]
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def incident_metrics(
    gold: Sequence[Iterable[str]],
    ranked_labels: Sequence[Sequence[str]],
    ranked_scores: Sequence[Sequence[float]],
    k: int = 5,
) -> dict:
    """Incident top-1 / top-k accuracy and mAP from each frame's ranked (label, score) list.

    `gold` holds each frame's positive incident labels; frames with none count in mAP as
    negatives but not in top-1/top-k. The model publishes only its top labels, so a class
    missing from a frame's list scores 0 there (mAP is over those lists, offline and live alike).
    mAP averages AP over the classes with at least one positive frame.
    """
    n = len(gold)
    if n == 0:
        raise ValueError("no frames to evaluate")
    if len(ranked_labels) != n or len(ranked_scores) != n:
        raise ValueError("gold, ranked_labels and ranked_scores must have one entry per frame")
    index = {name: i for i, name in enumerate(INCIDENT_LABELS)}
    gold_sets = [set(g) for g in gold]
    for g in gold_sets:
        for name in g:
            if name not in index:
                raise ValueError(f"unknown incident label {name!r} in gold")
    S = np.zeros((n, len(INCIDENT_LABELS)))
    for i, (labels, scores) in enumerate(zip(ranked_labels, ranked_scores, strict=True)):
        for name, score in zip(labels, scores, strict=True):
            if name not in index:
                raise ValueError(f"frame {i}: the prediction names incident label {name!r}, which is not one of "
                                 f"the {len(INCIDENT_LABELS)} of ember.labels (a model with another label list?)")
            S[i, index[name]] = score
    Y = np.array([[name in g for name in INCIDENT_LABELS] for g in gold_sets], dtype=bool)
    judged = [i for i, g in enumerate(gold_sets) if g]
    top1 = [bool(ranked_labels[i]) and ranked_labels[i][0] in gold_sets[i] for i in judged]
    topk = [bool(set(ranked_labels[i][:k]) & gold_sets[i]) for i in judged]
    per_class = {}
    for c, name in enumerate(INCIDENT_LABELS):
        ap = average_precision(Y[:, c], S[:, c])
        if ap is not None:
            per_class[name] = {"ap": ap, "support": int(Y[:, c].sum())}
    mean_ap = float(np.mean([v["ap"] for v in per_class.values()])) if per_class else None
    return {
        "n_frames": n,
        "n_with_incident": len(judged),
        "top1": float(np.mean(top1)) if judged else None,
        f"top{k}": float(np.mean(topk)) if judged else None,
        "mAP": mean_ap,
        "mAP_classes": len(per_class),
        "per_class": per_class,
    }


NO_INCIDENT = "(none)"


def confusion(gold: Sequence[Iterable[str]], top1: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
    """(gold row names, predicted column names, counts) of top-1 predictions.

    Multi-label frames count on the diagonal when the top-1 is any of their labels, otherwise
    in the row of their first label (alphabetical); frames without incident in row '(none)'.
    """
    rows_of = []
    for g, p in zip(gold, top1, strict=True):
        g = sorted(set(g))
        rows_of.append(p if p in g else (g[0] if g else NO_INCIDENT))
    rows = sorted(set(rows_of), key=lambda x: (x == NO_INCIDENT, x))
    cols = sorted(set(top1) | (set(rows) - {NO_INCIDENT}))
    m = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for r, p in zip(rows_of, top1, strict=True):
        m[rows.index(r), cols.index(p)] += 1
    return rows, cols, m


def latency_summary(values_ms: Sequence[float]) -> dict:
    """n, mean, max and p50/p90/p95/p99 (linear interpolation) of latencies in ms; None for no value."""
    arr = np.asarray(list(values_ms), dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "mean": None, "max": None, **{f"p{q}": None for q in PERCENTILES}}
    out = {"n": int(arr.size), "mean": float(arr.mean()), "max": float(arr.max())}
    out.update({f"p{q}": float(np.percentile(arr, q)) for q in PERCENTILES})
    return out
