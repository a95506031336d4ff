"""Heads that the engine can decode (5 sigmoids + per-robot thresholds) on teacher features:
BCE vs an additive powerset objective (softmax over label sets with score = sum of included logits)."""

import torch

torch.set_num_threads(1)
import torch.nn.functional as F  # noqa: E402
from common import data, report, select, set_metrics, split, teacher  # noqa: E402

tasks, folds, Y = data()
texts = [t.task for t in tasks]
gold = [list(t.robots) for t in tasks]
E = teacher().embed(texts)


def set_matrix(keys):
    cands = sorted(set(keys))
    M = torch.zeros(len(cands), 5)
    for i, c in enumerate(cands):
        M[i, list(c)] = 1
    return cands, M


def powerset_additive_loss(logits, target_idx, M):
    scores = logits @ M.T  # [B, S]
    return F.cross_entropy(scores, target_idx)


def fit(X, keys, mode, wd=1e-3, steps=400, hidden=0, seed=0):
    torch.manual_seed(seed)
    X = torch.tensor(X)
    cands, M = set_matrix(keys)
    ci = {c: i for i, c in enumerate(cands)}
    t = torch.tensor([ci[k] for k in keys])
    y = M[t]
    net = torch.nn.Linear(X.shape[1], 5) if not hidden else torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(hidden, 5))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=wd)
    for _ in range(steps):
        lg = net(X)
        loss = 0
        if "bce" in mode:
            loss = loss + F.binary_cross_entropy_with_logits(lg, y)
        if "ps" in mode:
            loss = loss + powerset_additive_loss(lg, t, M)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


def cv(name, mode, **kw):
    rows = []
    for f in range(5):
        tr, te = split(folds, f)
        net = fit(E[tr], [tuple(gold[i]) for i in tr], mode, **kw)
        with torch.no_grad():
            P = torch.sigmoid(net(torch.tensor(E[te]))).numpy()
        s, t = select(P, 0.5)
        rows.append(set_metrics([gold[i] for i in te], s, t))
    return report(name, rows)


if __name__ == "__main__":
    for wd in (1e-2, 1e-1, 1.0):
        cv(f"linear bce wd={wd}", "bce", wd=wd)
        cv(f"linear additive-powerset wd={wd}", "ps", wd=wd)
        cv(f"linear bce+ps wd={wd}", "bce+ps", wd=wd)
    cv("mlp256 bce+ps wd=0.1", "bce+ps", wd=0.1, hidden=256)
    cv("mlp256 ps wd=0.1", "ps", wd=0.1, hidden=256)
