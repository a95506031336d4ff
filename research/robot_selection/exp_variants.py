"""Cheap variations of the teacher's label-set head (finding 8): the regularisation C, prompt
prefixes, test-time augmentation, training on augmented tasks; and C chosen honestly (inner
grouped CV of each training split) for the teacher and for the shipped selector.

    .venv/bin/python research/robot_selection/exp_variants.py     # ~4 min (teacher embeddings cached;
    # the selector rows train the 5 fold selectors first when exp_ceiling.py has not cached them)
"""

import random

import numpy as np
from common import report, set_metrics, split
from exp_heads import E, T, decode_powerset, folds, gold, keys, powerset_probs, texts

from ember_training.robot_selection.augment import augment_task

K = 8
rng = random.Random(0)
var = [[augment_task(t, rng) for _ in range(K)] for t in texts]
EV = T.embed([v for vs in var for v in vs]).reshape(len(texts), K, -1)
pref = {
    "robot for": T.embed([f"Which robot is best suited for this task: {t}" for t in texts]),
    "Task:": T.embed([f"Task: {t}" for t in texts]),
    "lower": T.embed([t.lower().rstrip(".") for t in texts]),
}
T.save()


def full(Q, cl, classes):
    out = np.zeros((Q.shape[0], len(classes)))
    out[:, [classes.index(c) for c in cl]] = Q
    return out


def run(name, fn):
    rows = []
    for f in range(5):
        tr, te = split(folds, f)
        classes = sorted({keys[i] for i in tr})
        Q = fn(tr, te, classes)
        sets, top, _ = decode_powerset(Q, classes, "jac")
        rows.append(set_metrics([gold[i] for i in te], sets, top))
    report(name, rows)


def base(X, C=10):
    def fn(tr, te, classes):
        Q, cl = powerset_probs(X[tr], [keys[i] for i in tr], X[te], C)
        return full(Q, cl, classes)

    return fn


run("base", base(E))
for C in (1, 3, 30, 100):
    run(f"base C={C}", base(E, C))
for k, X in pref.items():
    run(f"prefix {k}", base(X))


def tta(w):
    def fn(tr, te, classes):
        Q, cl = powerset_probs(E[tr], [keys[i] for i in tr], E[te], 10)
        Q = full(Q, cl, classes) * w
        for j in range(K):
            Qj, cl = powerset_probs(E[tr], [keys[i] for i in tr], EV[te, j], 10)
            Q += full(Qj, cl, classes) * (1 - w) / K
        return Q

    return fn


for w in (0.5, 0.25):
    run(f"tta w={w}", tta(w))


def trainaug(n):
    def fn(tr, te, classes):
        X = np.vstack([E[tr]] + [EV[tr, j] for j in range(n)])
        k = [keys[i] for i in tr] * (n + 1)
        Q, cl = powerset_probs(X, k, E[te], 10)
        return full(Q, cl, classes)

    return fn


for n in (2, 8):
    run(f"train aug {n}", trainaug(n))


def meanemb(tr, te, classes):
    X = (E + EV.mean(1)) / 2
    Q, cl = powerset_probs(X[tr], [keys[i] for i in tr], X[te], 10)
    return full(Q, cl, classes)


run("mean of emb+variants", meanemb)


def inner_cv_c(X, grid=(1, 3, 10, 30, 100)):
    """C chosen per training split by grouped inner 4-fold CV (exact + Jaccard), never on the scored fold."""
    from ember_training.robot_selection.folds import inner_folds

    def fn(tr, te, classes):
        inner = inner_folds(texts, keys, tr, 4, 0)
        tr_a = np.array(tr)
        best = (-1.0, 10)
        for C in grid:
            score = 0.0
            for f in range(4):
                a = tr_a[[j for j, g in enumerate(inner) if g != f]]
                b = tr_a[[j for j, g in enumerate(inner) if g == f]]
                Q, cl = powerset_probs(X[a], [keys[i] for i in a], X[b], C)
                sets, top, _ = decode_powerset(Q, cl, "jac")
                m = set_metrics([gold[i] for i in b], sets, top)
                score += m["exact"] + m["jaccard"]
            best = max(best, (score, C))
        print(f"  inner CV picks C={best[1]}")
        return base(X, best[1])(tr, te, classes)

    return fn


run("teacher, C by inner CV", inner_cv_c(E))

# the shipped selector (distillation seed 0, vectors cached by exp_ceiling.py): C scan and inner-CV C
from exp_ceiling import student  # noqa: E402


class PerFold:
    """Features that depend on the fold (each fold's own selector)."""

    def __init__(self, make):
        self.make = make

    def __call__(self, fn_of_x):
        def fn(tr, te, classes):
            f = next(k for k in range(5) if split(folds, k)[1] == te)
            return fn_of_x(self.make(f, tr))(tr, te, classes)

        return fn


selector = PerFold(lambda f, tr: student(f, 0, tr))
for C in (3, 10, 30, 100):
    run(f"selector C={C}", selector(lambda X, C=C: base(X, C)))
run("selector, C by inner CV", selector(inner_cv_c))
