"""GPU sweep at the real text-pathway size: GPT-2 decoder 6x384 (transformers) + reasoning module
(2 layers, 256) + robot head, as in small.yaml; a learned constant stands in for the 8 visual tokens.
Reads cache/sweep (made by precompute_sweep.py); one variant over 5 folds per process."""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ros2_ws/src/ember"))
from ember.prompting import format_prompt  # noqa: E402
from ember_training.model.config import ModelConfig  # noqa: E402
from ember_training.model.decoder import LanguageDecoder  # noqa: E402
from ember_training.model.reasoning import ReasoningModule  # noqa: E402
from ember_training.robot_selection.augment import augment_task  # noqa: E402
from ember_training.robot_selection.metrics import mean_std, select, set_metrics  # noqa: E402

CACHE = Path(__file__).resolve().parent / "cache" / "sweep"
LAYERS = 0
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TextModel(nn.Module):
    def __init__(self, vocab, d=384, layers=6, heads=6, rdim=256, tdim=384, n_sets=0):
        layers = LAYERS or layers
        super().__init__()
        cfg = ModelConfig(d_model=d, n_layers=layers, n_heads=heads, vocab_size=vocab, n_positions=128,
                          dropout=0.1, reasoning_dim=rdim, reasoning_layers=2, reasoning_heads=4,
                          reasoning_ff_dim=4 * rdim)
        self.dec = LanguageDecoder(cfg)
        self.visual = nn.Parameter(torch.randn(8, d) * 0.02)
        self.reason = ReasoningModule(d, rdim, 2, 4, 4 * rdim, 0.1)
        self.drop = nn.Dropout(0.1)
        self.robot = nn.Linear(rdim, 5)
        self.distill = nn.Linear(rdim, tdim)
        self.ps = nn.Linear(rdim, n_sets) if n_sets else None

    def forward(self, ids, mask):
        b = ids.shape[0]
        x = torch.cat([self.visual.expand(b, -1, -1), self.dec.embed(ids)], 1)
        m = torch.cat([mask.new_ones(b, 8), mask], 1)
        h, _ = self.dec(x, attention_mask=m.long())
        pooled, _ = self.reason(h, m)
        return pooled


def encode(tok, texts, pad, maxlen=48):
    enc = [tok.encode(format_prompt(s)).ids[:maxlen] for s in texts]
    n = max(len(e) for e in enc)
    ids = torch.full((len(enc), n), pad)
    mask = torch.zeros(len(enc), n, dtype=torch.bool)
    for k, e in enumerate(enc):
        ids[k, : len(e)] = torch.tensor(e)
        mask[k, : len(e)] = True
    return ids.to(dev), mask.to(dev)


def run_fold(f, a, meta, E):
    pf = meta["per_fold"][f]
    texts, labels, pool = meta["texts"], meta["labels"], meta["pool"]
    tr, te = pf["train"], pf["test"]
    rng = random.Random(a.seed + f)
    torch.manual_seed(a.seed + f)
    tok = Tokenizer.from_file(str(CACHE / f"tok{f}.json"))
    pad = tok.token_to_id("<|pad|>")
    keys = [tuple(labels[i]) for i in tr]
    sets = sorted(set(keys))
    M = torch.zeros(len(sets), 5, device=dev)
    for i, s in enumerate(sets):
        M[i, list(s)] = 1
    set_idx = {s: i for i, s in enumerate(sets)}
    model = TextModel(tok.get_vocab_size(), n_sets=len(sets) if a.powerset else 0).to(dev)
    if a.init:
        tv = torch.tensor(E[pf["tokens"]], dtype=torch.float32, device=dev)
        with torch.no_grad():
            model.dec.wte.weight[: tv.shape[0]] = tv * a.init
    # distillation pool: only train-derived texts (+ generic)
    dist = [texts[i] for i in tr] + ([pool[i] for i in pf["variants"]] if a.variants else []) \
        + ([pool[i] for i in pf["recomb"]] if a.recomb else []) + ([pool[i] for i in pf["subtasks"]] if a.subtasks else [])
    dvec = [E[meta["tasks"][i]] for i in tr] + ([E[i] for i in pf["variants"]] if a.variants else []) \
        + ([E[i] for i in pf["recomb"]] if a.recomb else []) + ([E[i] for i in pf["subtasks"]] if a.subtasks else [])
    if a.generic:
        g = meta["generic"][: a.generic]
        dist += [pool[i] for i in g]
        dvec += [E[i] for i in g]
    dvec = torch.tensor(np.stack(dvec), dtype=torch.float32, device=dev)
    ytr = torch.tensor([[1.0 if r in labels[i] else 0.0 for r in range(5)] for i in tr], device=dev)
    # soft targets from the teacher classifier (MiniLM + powerset LR fit on the train split)
    soft = None
    if a.teacher_soft:
        from sklearn.linear_model import LogisticRegression
        Xtr = E[[meta["tasks"][i] for i in tr]].astype(np.float32)
        lr = LogisticRegression(C=10, max_iter=3000).fit(Xtr, [set_idx[k] for k in keys])
        Q = lr.predict_proba(dvec.cpu().numpy())
        Mc = M.cpu().numpy()[lr.classes_]
        soft = torch.tensor(Q @ Mc, dtype=torch.float32, device=dev)
    if a.fixed_proj:  # no trainable projection: PCA of the teacher targets down to the pooled width
        mu = dvec.mean(0, keepdim=True)
        _, _, V = torch.linalg.svd(dvec - mu, full_matrices=False)
        dvec = (dvec - mu) @ V[:256].T
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.05)
    model.train()
    t0 = time.time()
    for _step in range(a.steps):
        loss = torch.zeros((), device=dev)
        bi = [rng.randrange(len(tr)) for _ in range(a.bs)]
        bt = [texts[tr[i]] if rng.random() < 0.5 else augment_task(texts[tr[i]], rng) for i in bi]
        ids, mask = encode(tok, bt, pad)
        pooled = model(ids, mask)
        lg = model.robot(model.drop(pooled))
        loss = loss + a.w_sup * F.binary_cross_entropy_with_logits(lg, ytr[bi])
        if a.powerset:
            tgt = torch.tensor([set_idx[keys[i]] for i in bi], device=dev)
            loss = loss + a.powerset * F.cross_entropy(model.ps(model.drop(pooled)), tgt)
        if a.distill or soft is not None:
            di = [rng.randrange(len(dist)) for _ in range(a.bs * a.dmul)]
            ids, mask = encode(tok, [dist[i] for i in di], pad)
            pd = model(ids, mask)
            if a.distill:
                zd = pd if a.fixed_proj else model.distill(pd)
                loss = loss + a.distill * (1 - F.cosine_similarity(zd, dvec[di]).mean())
            if soft is not None:
                loss = loss + a.teacher_soft * F.binary_cross_entropy_with_logits(model.robot(pd), soft[di])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        ids, mask = encode(tok, [texts[i] for i in te], pad)
        pte = model(ids, mask)
        P = torch.sigmoid(model.robot(pte)).cpu().numpy()
        tv = torch.tensor(E[[meta["tasks"][i] for i in te]], dtype=torch.float32, device=dev)
        cos = 0.0 if a.fixed_proj else F.cosine_similarity(model.distill(pte), tv).mean().item()
        ids, mask = encode(tok, [texts[i] for i in tr], pad)
        ptr = model(ids, mask)
    gold = [labels[i] for i in te]
    res = {}
    s, t = select(P, 0.5)
    res["head"] = set_metrics(gold, s, t)
    if a.powerset:
        with torch.no_grad():
            Qp = torch.softmax(model.ps(pte), -1)
            marg = (Qp @ M).cpu().numpy()
            Qn = Qp.cpu().numpy()
        s, t = select(marg, 0.5)
        res["ps_marg"] = set_metrics(gold, s, t)
        best = [list(sets[int(k)]) for k in Qn.argmax(1)]
        res["ps_map"] = set_metrics(gold, best, [int(np.argmax(m)) for m in marg])
    # frozen pooled features + powerset LR (a head fit after training)
    from sklearn.linear_model import LogisticRegression
    Ztr, Zte = F.normalize(ptr, dim=-1).cpu().numpy(), F.normalize(pte, dim=-1).cpu().numpy()
    lr = LogisticRegression(C=10, max_iter=3000).fit(Ztr, [set_idx[k] for k in keys])
    Q = lr.predict_proba(Zte)
    marg = Q @ M.cpu().numpy()[lr.classes_]
    s, t = select(marg, 0.5)
    res["feat_ps"] = set_metrics(gold, s, t)
    for r in res.values():
        r["cos"] = cos
    res["seconds"] = time.time() - t0
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--dmul", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--w-sup", type=float, default=1.0)
    p.add_argument("--distill", type=float, default=0.0)
    p.add_argument("--variants", type=int, default=1)
    p.add_argument("--recomb", type=int, default=1)
    p.add_argument("--subtasks", type=int, default=1)
    p.add_argument("--generic", type=int, default=0)
    p.add_argument("--init", type=float, default=0.0)
    p.add_argument("--powerset", type=float, default=0.0)
    p.add_argument("--teacher-soft", type=float, default=0.0)
    p.add_argument("--fixed-proj", type=int, default=0)
    p.add_argument("--layers", type=int, default=0)
    p.add_argument("--only-fold", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
    meta = json.loads((CACHE / "meta.json").read_text())
    E = np.load(CACHE / "emb.npz")["emb"].astype(np.float32)
    LAYERS = a.layers
    rows = []
    for f in ([a.only_fold] if a.only_fold >= 0 else range(a.folds)):
        rows.append(run_fold(f, a, meta, E))
        print(a.name, "fold", f, json.dumps({k: (v if k == "seconds" else {m: round(x, 3) for m, x in v.items()}) for k, v in rows[-1].items()}), flush=True)
    summary = {"name": a.name, "args": vars(a)}
    for k in rows[0]:
        if k == "seconds":
            summary["seconds"] = sum(r["seconds"] for r in rows)
            continue
        ms = mean_std([r[k] for r in rows])
        summary[k] = ms
        print(f"{a.name:28s} {k:8s} " + " ".join(f"{m}={v['mean']:.3f}±{v['std']:.3f}" for m, v in ms.items()), flush=True)
    print(f"{a.name} seconds {summary['seconds']:.0f}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(summary))
