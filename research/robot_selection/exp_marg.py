"""Powerset LR on teacher features, decoded by thresholding its marginals (what 5 sigmoids can carry)."""
import torch

torch.set_num_threads(1)
from common import data, report, select, set_metrics, split, teacher  # noqa: E402
from exp_heads import decode_powerset, powerset_probs  # noqa: E402

tasks, folds, Y = data()
texts = [t.task for t in tasks]
gold = [list(t.robots) for t in tasks]
keys = [tuple(t.robots) for t in tasks]
E = teacher().embed(texts)
for C in (3, 10, 30):
    for thr in (0.4, 0.45, 0.5):
        rows = []
        for f in range(5):
            tr, te = split(folds, f)
            Q, cl = powerset_probs(E[tr], [keys[i] for i in tr], E[te], C)
            _, _, marg = decode_powerset(Q, cl, "map")
            s, t = select(marg, thr)
            rows.append(set_metrics([gold[i] for i in te], s, t))
        report(f"powerset C={C} marginals>{thr}", rows)
