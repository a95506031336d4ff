"""How far do heads on the frozen teacher embedding go? (ceiling for a distilled student)"""

import torch

torch.set_num_threads(1)
from common import data, np, report, select, set_metrics, split, teacher  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from ember_training.robot_selection.cv import ovr_probs  # noqa: E402
from ember_training.robot_selection.folds import inner_folds  # noqa: E402

tasks, folds, Y = data()
texts = [t.task for t in tasks]
gold = [list(t.robots) for t in tasks]
T = teacher()
E = T.embed(texts)
keys = [tuple(t.robots) for t in tasks]


def powerset_probs(Xtr, ktr, Xte, C):
    classes = sorted(set(ktr))
    ci = {c: i for i, c in enumerate(classes)}
    m = LogisticRegression(C=C, max_iter=3000).fit(Xtr, [ci[k] for k in ktr])
    Q = m.predict_proba(Xte)
    return Q, [classes[i] for i in m.classes_]


def decode_powerset(Q, classes, mode="map"):
    sets, top = [], []
    M = np.zeros((len(classes), 5))
    for i, c in enumerate(classes):
        M[i, list(c)] = 1
    marg = Q @ M
    for q, m in zip(Q, marg, strict=False):
        if mode == "map":
            s = list(classes[int(np.argmax(q))])
        else:  # maximise expected Jaccard over candidate sets
            J = np.array([[len(set(a) & set(b)) / len(set(a) | set(b)) for b in classes] for a in classes])
            s = list(classes[int(np.argmax(J @ q))])
        sets.append(sorted(s, key=lambda r: -m[r]))
        top.append(int(np.argmax(m)))
    return sets, top, marg


def powerset_scores(Z, tr, te, labels, C=10):
    """Label-set LR on rows `tr` of features Z, expected-Jaccard decoding, metrics on rows `te`."""
    label_sets = [tuple(x) for x in labels]
    Q, cl = powerset_probs(Z[tr], [label_sets[i] for i in tr], Z[te], C)
    sets, top, _ = decode_powerset(Q, cl, "jac")
    return set_metrics([list(labels[i]) for i in te], sets, top)


def calibrated_thresholds(X, idx, C, grid=None):
    grid = np.linspace(0.2, 0.7, 11) if grid is None else grid
    fo = inner_folds(texts, keys, idx, 4, 0)
    oof = np.zeros((len(idx), 5))
    idx = np.array(idx)
    for f in range(4):
        a = np.array([j for j, ff in enumerate(fo) if ff != f])
        b = np.array([j for j, ff in enumerate(fo) if ff == f])
        oof[b] = ovr_probs(X[idx[a]], Y[idx[a]], X[idx[b]], C)
    # one global threshold maximising exact-set on the inner OOF predictions, then per robot
    thr = np.full(5, 0.5)
    for _it in range(2):
        for r in range(5):
            best = (-1, 0.5)
            for g in grid:
                t = thr.copy()
                t[r] = g
                s, tp = select(oof, t)
                m = set_metrics([gold[i] for i in idx], s, tp)
                best = max(best, (m["exact"] + m["jaccard"], g))
            thr[r] = best[1]
    return thr


def cv(name, fn):
    rows = []
    for f in range(5):
        tr, te = split(folds, f)
        sets, top = fn(tr, te)
        rows.append(set_metrics([gold[i] for i in te], sets, top))
    return report(name, rows)


def lr(X, C, thr=False):
    def fn(tr, te):
        P = ovr_probs(X[tr], Y[tr], X[te], C)
        t = calibrated_thresholds(X, tr, C) if thr else 0.5
        return select(P, t)
    return fn


def ps(X, C, mode="map"):
    def fn(tr, te):
        Q, cl = powerset_probs(X[tr], [keys[i] for i in tr], X[te], C)
        s, t, _ = decode_powerset(Q, cl, mode)
        return s, t
    return fn


def tfidf_feats(tr, te):
    v = TfidfVectorizer(ngram_range=(1, 1), sublinear_tf=True)
    a = v.fit_transform([texts[i] for i in tr]).toarray()
    b = v.transform([texts[i] for i in te]).toarray()
    return a, b


def concat(C, w=0.5):
    def fn(tr, te):
        a, b = tfidf_feats(tr, te)
        Xtr = np.hstack([E[tr], w * a])
        Xte = np.hstack([E[te], w * b])
        return select(ovr_probs(Xtr, Y[tr], Xte, C), 0.5)
    return fn


if __name__ == "__main__":
    import sys
    which = sys.argv[1:] or ["lr", "ps", "thr", "cat", "cap"]
    if "lr" in which:
        for C in (3, 10, 30):
            cv(f"minilm LR C={C}", lr(E, C))
    if "ps" in which:
        for C in (3, 10, 30, 100):
            cv(f"minilm powerset C={C} map", ps(E, C))
            cv(f"minilm powerset C={C} exp-jacc", ps(E, C, "jac"))
    if "thr" in which:
        cv("minilm LR C=10 inner-cv thresholds", lr(E, 10, True))
    if "cat" in which:
        for w in (0.3, 0.5, 1.0):
            cv(f"minilm+tfidf LR C=10 w={w}", concat(10, w))
