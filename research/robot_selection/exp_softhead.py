"""Does the selector's head gain from the teacher classifier's soft labels on all distillation texts?
(head = softmax over the train split's label sets, trained on hard train labels + KL to the
teacher powerset LR's P(set) on ~38k distillation texts; vs the shipped LR head)."""

import sys

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
from common import CACHE, data, np, report, set_metrics, split  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from ember_training.robot_selection.config import SelectorConfig  # noqa: E402
from ember_training.robot_selection.selector import _QuantisedEncoder, distillation_texts, train_selector  # noqa: E402
from ember_training.robot_selection.teacher import MiniLMTeacher  # noqa: E402

tasks, folds, _ = data()
teacher = MiniLMTeacher(CACHE / "minilm.npz")
W_SOFT = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
rows_lr, rows_soft = [], []
for f in range(5):
    tr, te = split(folds, f)
    train = [tasks[i] for i in tr]
    arrays, _ = train_selector(train, SelectorConfig(), 0, teacher)
    enc = _QuantisedEncoder([w.decode() for w in arrays["words"]], arrays["vectors"], arrays["scales"], arrays["weights"])
    sets = sorted({t.robots for t in train})
    M = np.zeros((len(sets), 5))
    for i, s in enumerate(sets):
        M[i, list(s)] = 1
    y = np.array([sets.index(t.robots) for t in train])
    texts = distillation_texts(train, SelectorConfig(), 0)
    T_tr = teacher.embed([t.task for t in train])
    tlr = LogisticRegression(C=10, max_iter=3000).fit(T_tr, y)
    P = np.zeros((len(texts), len(sets)))
    P[:, tlr.classes_] = tlr.predict_proba(teacher.embed(texts))
    Xd = torch.tensor(np.stack([enc.embed(t) for t in texts]), dtype=torch.float32)
    Xt = torch.tensor(np.stack([enc.embed(t.task) for t in train]), dtype=torch.float32)
    Xe = np.stack([enc.embed(tasks[i].task) for i in te])
    gold = [list(tasks[i].robots) for i in te]

    def decode(Q, M=M):
        J = (M @ M.T) / np.maximum(M.sum(1)[:, None] + M.sum(1)[None] - M @ M.T, 1)
        marg = Q @ M
        out = [list(np.flatnonzero(M[int(np.argmax(J @ q))])) for q in Q]
        return out, [int(np.argmax(m)) for m in marg]

    lr = LogisticRegression(C=10, max_iter=5000).fit(Xt.numpy(), y)
    Q = np.zeros((len(te), len(sets)))
    Q[:, lr.classes_] = lr.predict_proba(Xe)
    rows_lr.append(set_metrics(gold, *decode(Q)))
    head = torch.nn.Linear(Xd.shape[1], len(sets))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    Pt = torch.tensor(P, dtype=torch.float32)
    yt = torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    for _ in range(800):
        bi = torch.randint(0, len(Xd), (512,), generator=g)
        loss = F.cross_entropy(head(Xt) * 1.0, yt) + W_SOFT * F.kl_div(F.log_softmax(head(Xd[bi]), -1), Pt[bi], reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        Q2 = torch.softmax(head(torch.tensor(Xe, dtype=torch.float32)), -1).numpy()
    rows_soft.append(set_metrics(gold, *decode(Q2)))
    print(f"fold {f}: lr exact {rows_lr[-1]['exact']:.3f} | soft exact {rows_soft[-1]['exact']:.3f} jac {rows_soft[-1]['jaccard']:.3f}", flush=True)
report("selector + LR head (shipped)", rows_lr)
report(f"selector + soft teacher head w={W_SOFT}", rows_soft)
