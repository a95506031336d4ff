"""Set metrics of robot selection (research and CV fallback; ember.eval has the reference ones)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ember.labels import NUM_ROBOT_TYPES


def set_metrics(gold: Sequence[Sequence[int]], pred: Sequence[Sequence[int]], top1: Sequence[int]) -> dict[str, float]:
    """exact-set match, mean Jaccard, top-1 hit (best-ranked robot is in the gold set), micro/macro F1."""
    n = len(gold)
    exact = jac = hit = 0.0
    tp = np.zeros(NUM_ROBOT_TYPES)
    fp = np.zeros(NUM_ROBOT_TYPES)
    fn = np.zeros(NUM_ROBOT_TYPES)
    for g, p, t in zip(gold, pred, top1, strict=False):
        g, p = set(g), set(p)
        exact += g == p
        jac += len(g & p) / max(len(g | p), 1)
        hit += t in g
        for r in range(NUM_ROBOT_TYPES):
            tp[r] += (r in g) and (r in p)
            fp[r] += (r not in g) and (r in p)
            fn[r] += (r in g) and (r not in p)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    per = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    return {"exact": exact / n, "jaccard": jac / n, "top1_hit": hit / n, "micro_f1": float(micro),
            "macro_f1": float(np.nanmean(per))}


def select(scores: np.ndarray, thresholds: np.ndarray | float = 0.5) -> tuple[list[list[int]], list[int]]:
    """Robot sets from probabilities [N, 5]: all above threshold, best first; the top one if none."""
    scores = np.asarray(scores)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=float), (scores.shape[1],))
    sets, top = [], []
    for s in scores:
        order = [int(i) for i in np.argsort(-s)]
        chosen = [i for i in order if s[i] >= thr[i]] or order[:1]
        sets.append(chosen)
        top.append(order[0])
    return sets, top


def mean_std(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = rows[0].keys()
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows], ddof=1 if len(rows) > 1 else 0))} for k in keys}
