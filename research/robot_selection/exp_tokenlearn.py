"""Static student (tokenlearn-style): per-token vectors + per-token weights over the fold's BPE,
trained so the weighted mean matches the teacher sentence embedding; then heads. CPU, minutes."""

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

torch.set_num_threads(2)
from common import CACHE, report  # noqa: E402
from exp_heads import powerset_scores  # noqa: E402

S = CACHE / "sweep"
meta = json.loads((S / "meta.json").read_text())
E = np.load(S / "emb.npz")["emb"].astype(np.float32)
texts, labels, pool = meta["texts"], meta["labels"], meta["pool"]


class Static(torch.nn.Module):
    def __init__(self, init, dim):
        super().__init__()
        self.vec = torch.nn.Parameter(init.clone())
        self.w = torch.nn.Parameter(torch.zeros(init.shape[0]))
        self.proj = torch.nn.Linear(init.shape[1], dim) if dim != init.shape[1] else torch.nn.Identity()

    def forward(self, ids, offsets_mask):
        v = self.vec[ids]  # [B, L, D]
        w = F.softplus(self.w[ids]) * offsets_mask
        pooled = (v * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)
        return self.proj(pooled)


def enc(tok, batch, maxlen=48):
    ids = [tok.encode(s).ids[:maxlen] or [0] for s in batch]
    n = max(map(len, ids))
    a = torch.zeros(len(ids), n, dtype=torch.long)
    m = torch.zeros(len(ids), n)
    for k, e in enumerate(ids):
        a[k, : len(e)] = torch.tensor(e)
        m[k, : len(e)] = 1
    return a, m


def run_fold(f, steps, bs, lr, use_generic=True, aug=True):
    pf = meta["per_fold"][f]
    tok = Tokenizer.from_file(str(S / f"tok{f}.json"))
    tr, te = pf["train"], pf["test"]
    init = torch.tensor(E[pf["tokens"]])
    model = Static(init, 384)
    dist = [texts[i] for i in tr] + [pool[i] for i in pf["variants"] + pf["recomb"] + pf["subtasks"]]
    dvec = [E[meta["tasks"][i]] for i in tr] + [E[i] for i in pf["variants"] + pf["recomb"] + pf["subtasks"]]
    if use_generic:
        dist += [pool[i] for i in meta["generic"]]
        dvec += [E[i] for i in meta["generic"]]
    dvec = torch.tensor(np.stack(dvec))

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(f)
    t0 = time.time()
    for _step in range(steps):
        bi = rng.integers(0, len(dist), bs)
        batch = [dist[i] for i in bi]
        ids, m = enc(tok, batch)
        z = model(ids, m)
        loss = (1 - F.cosine_similarity(z, dvec[bi])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        ids, m = enc(tok, texts)
        Z = F.normalize(model(ids, m), dim=-1).numpy()
        cos = float((Z[te] * E[[meta["tasks"][i] for i in te]]).sum(1).mean())
    r = powerset_scores(Z, tr, te, labels)
    r["cos"] = cos
    print(f"fold {f} {time.time()-t0:.0f}s loss {loss.item():.3f} cos {cos:.3f} exact {r['exact']:.3f}", flush=True)
    return r


if __name__ == "__main__":
    steps, bs, lr = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    folds = [int(x) for x in sys.argv[4].split(",")] if len(sys.argv) > 4 else range(5)
    rows = [run_fold(f, steps, bs, lr) for f in folds]
    report(f"tokenlearn steps={steps} bs={bs} lr={lr}", rows)
