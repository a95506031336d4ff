"""Word-level static student: teacher vector of each word (embedded alone) as init, per-word
weights, optionally trained tokenlearn-style on the fold's distillation texts; powerset LR head."""

import json
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
from common import CACHE, report, teacher  # noqa: E402
from exp_heads import powerset_scores  # noqa: E402

from ember_training.robot_selection.augment import teacher_words  # noqa: E402

S = CACHE / "sweep"
meta = json.loads((S / "meta.json").read_text())
E = np.load(S / "emb.npz")["emb"].astype(np.float32)
texts, labels, pool = meta["texts"], meta["labels"], meta["pool"]
T = teacher()


def words(s):
    return re.findall(r"[a-z]+", s.lower())


def run_fold(f, steps, bs, lr, nwords=20000, train_vec=True, dim=384):
    pf = meta["per_fold"][f]
    tr, te = pf["train"], pf["test"]
    dist = [texts[i] for i in tr] + [pool[i] for i in pf["variants"] + pf["recomb"] + pf["subtasks"]] + [pool[i] for i in meta["generic"]]
    dvec = np.stack([E[meta["tasks"][i]] for i in tr] + [E[i] for i in pf["variants"] + pf["recomb"] + pf["subtasks"]] + [E[i] for i in meta["generic"]])
    vocab = list(teacher_words()[:nwords])
    seen = set(vocab)
    vocab += sorted({w for i in tr for w in words(texts[i])} - seen)
    index = {w: k + 1 for k, w in enumerate(vocab)}  # 0 = unknown/pad
    V = T.embed(vocab)
    if dim < 384:  # fixed PCA of the teacher space (fit on the distillation targets)
        mu = dvec.mean(0, keepdims=True)
        _, _, vt = np.linalg.svd(dvec - mu, full_matrices=False)
        P = vt[:dim].T
        dvec = (dvec - mu) @ P
        V = (V - mu) @ P
    V = np.concatenate([np.zeros((1, V.shape[1]), np.float32), V.astype(np.float32)])
    model_vec = torch.nn.Parameter(torch.tensor(V), requires_grad=train_vec)
    wlog = torch.nn.Parameter(torch.zeros(len(V)))

    def enc(batch):
        ids = [[index.get(w, 0) for w in words(s)][:40] or [0] for s in batch]
        n = max(map(len, ids))
        a = torch.zeros(len(ids), n, dtype=torch.long)
        for k, e in enumerate(ids):
            a[k, : len(e)] = torch.tensor(e)
        return a

    def fwd(a):
        m = (a > 0).float()
        w = F.softplus(wlog[a]) * m
        return (model_vec[a] * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)

    params = [wlog] + ([model_vec] if train_vec else [])
    opt = torch.optim.Adam(params, lr=lr)
    dv = torch.tensor(dvec)
    rng = np.random.default_rng(f)
    t0 = time.time()
    for _ in range(steps):
        bi = rng.integers(0, len(dist), bs)
        z = fwd(enc([dist[i] for i in bi]))
        loss = (1 - F.cosine_similarity(z, dv[bi])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        Z = F.normalize(fwd(enc(texts)), dim=-1).numpy()
    r = powerset_scores(Z, tr, te, labels)
    print(f"fold {f} {time.time()-t0:.0f}s exact {r['exact']:.3f} jac {r['jaccard']:.3f}", flush=True)
    return r


if __name__ == "__main__":
    steps, bs, lr = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    tv = sys.argv[4] == "1"
    folds = [int(x) for x in sys.argv[5].split(",")] if len(sys.argv) > 5 else range(5)
    dim, nw = int(sys.argv[6]), int(sys.argv[7])
    rows = [run_fold(f, steps, bs, lr, train_vec=tv, dim=dim, nwords=nw) for f in folds]
    report(f"wordlearn steps={steps} lr={lr} train_vec={tv} dim={dim} words={nw}", rows)
