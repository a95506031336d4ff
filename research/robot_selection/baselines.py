"""Baselines under the shared grouped 5-fold CV: always-{Drone}, TF-IDF+LR, MiniLM+kNN/LR."""

import torch

torch.set_num_threads(1)
from common import data, np, report, select, set_metrics, split, teacher  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402

from ember_training.robot_selection.cv import knn_scores, ovr_probs  # noqa: E402

tasks, folds, Y = data()
texts = [t.task for t in tasks]
gold = [list(t.robots) for t in tasks]
E = teacher().embed(texts)


def run(name, fit_predict):
    rows = []
    for f in range(5):
        tr, te = split(folds, f)
        P = fit_predict(tr, te)
        if isinstance(P, tuple):
            sets, top = P
        else:
            sets, top = select(P, 0.5)
        rows.append(set_metrics([gold[i] for i in te], sets, top))
    return report(name, rows)


def drone(tr, te):
    return [[0]] * len(te), [0] * len(te)


def ovr(X, C=10.0):
    def fp(tr, te):
        return ovr_probs(X[tr], Y[tr], X[te], C, max_iter=2000)
    return fp


def tfidf_lr(C=10.0, ngram=(1, 2)):
    def fp(tr, te):
        v = TfidfVectorizer(ngram_range=ngram, sublinear_tf=True, min_df=1)
        return ovr_probs(v.fit_transform([texts[i] for i in tr]), Y[tr], v.transform([texts[i] for i in te]), C,
                         max_iter=2000)
    return fp


def knn(k=5, vote=0.5, weighted=True):
    def fp(tr, te):
        if weighted:  # the `ember-eval robot-selection --cv` baseline
            return knn_scores(E[tr], Y[tr], E[te], k)
        S = E[te] @ E[tr].T
        return np.stack([Y[tr][np.argsort(-row)[:k]].mean(0) for row in S])

    return fp


def knn_powerset(k=5):
    """kNN voting over whole label sets (the most voted set)."""
    def fp(tr, te):
        S = E[te] @ E[tr].T
        sets, top = [], []
        for j in range(len(te)):
            idx = np.argsort(-S[j])[:k]
            votes = {}
            for i in idx:
                key = tuple(gold[tr[i]] if False else sorted(np.nonzero(Y[tr[i]])[0].tolist()))
                votes[key] = votes.get(key, 0) + np.exp(S[j, i] / 0.05)
            best = max(votes, key=votes.get)
            rv = (np.exp(S[j, idx] / 0.05)[:, None] * Y[tr][idx]).sum(0)
            sets.append(list(best))
            top.append(int(np.argmax(rv)))
        return sets, top
    return fp


if __name__ == "__main__":
    run("always {Drone}", drone)
    for C in (1, 10, 100):
        run(f"tfidf(1,2)+LR C={C}", tfidf_lr(C))
    run("tfidf(1,1)+LR C=10", tfidf_lr(10, (1, 1)))
    for k in (1, 3, 5, 7):
        run(f"minilm+kNN k={k}", knn(k))
    run("minilm+kNN k=5 unweighted", knn(5, weighted=False))
    for k in (3, 5, 9):
        run(f"minilm+kNN powerset k={k}", knn_powerset(k))
    for C in (1, 10, 100):
        run(f"minilm+LR C={C}", ovr(E, C))
