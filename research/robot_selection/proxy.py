"""Plain-torch proxy of the edge text pathway: own BPE + small causal transformer + pooled heads.

Variants (flags): distill (cosine regression to teacher embeddings on train-fold texts, their
augmentations and optionally a generic corpus), init (token embeddings from teacher vectors),
powerset decode vs. thresholds."""

import argparse
import random
import time

import torch

torch.set_num_threads(1)
import torch.nn.functional as F  # noqa: E402
from common import data, np, report, select, set_metrics, split, teacher  # noqa: E402
from corpus import random_phrases, teacher_words  # noqa: E402
from torch import nn  # noqa: E402

from ember_training.tokenizer import train_bpe  # noqa: E402

tasks, folds, Y = data()
texts = [t.task for t in tasks]
gold = [list(t.robots) for t in tasks]
T = teacher()


def augment(s, rng):
    w = s.split()
    op = rng.random()
    if op < 0.4 and len(w) > 3:  # word dropout
        w = [x for x in w if rng.random() > 0.2] or w
    elif op < 0.7 and len(w) > 4:  # crop a span
        a = rng.randint(0, len(w) // 3)
        b = rng.randint(a + 3, len(w))
        w = w[a:b]
    elif op < 0.85:  # lower-case + strip punctuation
        w = [x.strip(".,").lower() for x in w]
    else:  # swap two words
        if len(w) > 2:
            i, j = rng.sample(range(len(w)), 2)
            w[i], w[j] = w[j], w[i]
    return " ".join(w)


class Student(nn.Module):
    def __init__(self, vocab, d=256, layers=3, heads=4, maxlen=48, tdim=384):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(maxlen, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, 0.1, batch_first=True, norm_first=True, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, layers)
        self.reason = nn.TransformerEncoderLayer(d, heads, 2 * d, 0.1, batch_first=True, norm_first=True, activation="gelu")
        self.norm = nn.LayerNorm(d)
        self.distill = nn.Linear(d, tdim)
        self.robot = nn.Linear(d, 5)

    def forward(self, ids, mask):
        n = ids.shape[1]
        x = self.emb(ids) + self.pos(torch.arange(n))
        causal = torch.triu(torch.full((n, n), float("-inf")), 1)
        x = self.enc(x, mask=causal, src_key_padding_mask=~mask)
        x = self.reason(x, src_key_padding_mask=~mask)
        m = mask.float().unsqueeze(-1)
        pooled = self.norm((x * m).sum(1) / m.sum(1))
        return pooled


def encode(tok, batch, maxlen=48):
    ids = [tok.encode(s).ids[:maxlen] for s in batch]
    n = max(len(i) for i in ids)
    pad = 1
    out = torch.full((len(ids), n), pad)
    mask = torch.zeros(len(ids), n, dtype=torch.bool)
    for k, i in enumerate(ids):
        out[k, : len(i)] = torch.tensor(i)
        mask[k, : len(i)] = True
    return out, mask


def run_fold(tr, te, a, generic, Gv):
    rng = random.Random(a.seed)
    torch.manual_seed(a.seed)
    tr_texts = [texts[i] for i in tr]
    corpus = tr_texts * 3 + (teacher_words(a.bpe_generic) if a.bpe_generic else [])
    tok = train_bpe(corpus, 8192)
    V = tok.get_vocab_size()
    model = Student(V, a.d, a.layers)
    if a.init:
        strs = [tok.decode([i]).strip() or "." for i in range(V)]
        with torch.no_grad():
            tv = torch.tensor(T.embed(strs))
            model.emb.weight.copy_(tv[:, : a.d] * (a.d ** 0.5) * 0.5 if a.d <= 384 else tv)
    # distillation pool: train-fold tasks + augmentations (+ generic corpus)
    aug = [augment(s, rng) for s in tr_texts for _ in range(a.n_aug)]
    dtexts = tr_texts + aug
    dvec = T.embed(dtexts)
    if a.generic:
        dtexts = dtexts + generic
        dvec = np.concatenate([dvec, Gv])
    dvec = torch.tensor(dvec)
    ytr = torch.tensor(Y[tr])
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    model.train()
    for _step in range(a.steps):
        loss = 0
        # supervised robot labels on (augmented) train tasks
        bi = [rng.randrange(len(tr)) for _ in range(a.bs)]
        bt = [tr_texts[i] if rng.random() < 0.5 else augment(tr_texts[i], rng) for i in bi]
        ids, mask = encode(tok, bt)
        pooled = model(ids, mask)
        loss = loss + a.w_sup * F.binary_cross_entropy_with_logits(model.robot(pooled), ytr[bi])
        if a.distill:
            di = [rng.randrange(len(dtexts)) for _ in range(a.bs)]
            ids, mask = encode(tok, [dtexts[i] for i in di])
            pd = model(ids, mask)
            loss = loss + a.distill * (1 - F.cosine_similarity(model.distill(pd), dvec[di]).mean())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        ids, mask = encode(tok, [texts[i] for i in te])
        pooled = model(ids, mask)
        P = torch.sigmoid(model.robot(pooled)).numpy()
        cos = F.cosine_similarity(model.distill(pooled), torch.tensor(T.embed([texts[i] for i in te]))).mean().item()
        ids, mask = encode(tok, tr_texts)
        ptr = model(ids, mask)
        Z_tr = F.normalize(model.distill(ptr), dim=-1).numpy()
        Z_te = F.normalize(model.distill(pooled), dim=-1).numpy()
    s, t = select(P, 0.5)
    m = set_metrics([gold[i] for i in te], s, t)
    # the student's distilled embedding + powerset LR (what a better head could get)
    from exp_heads import decode_powerset, powerset_probs
    Q, cl = powerset_probs(Z_tr, [tuple(gold[i]) for i in tr], Z_te, 10)
    s2, t2, _ = decode_powerset(Q, cl, "jac")
    m2 = set_metrics([gold[i] for i in te], s2, t2)
    m2["cos"] = m["cos"] = cos
    return m, m2


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="proxy")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--distill", type=float, default=0.0)
    p.add_argument("--w-sup", type=float, default=1.0)
    p.add_argument("--n-aug", type=int, default=10)
    p.add_argument("--generic", type=int, default=0)
    p.add_argument("--bpe-generic", type=int, default=0)
    p.add_argument("--init", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    generic, Gv = [], None
    if a.generic:
        w = teacher_words(20000)
        generic = w[: a.generic // 2] + random_phrases(a.generic - a.generic // 2, w[:8000])
        Gv = T.embed(generic)
    rows, rows2 = [], []
    t0 = time.time()
    for f in range(a.folds):
        tr, te = split(folds, f)
        m, m2 = run_fold(tr, te, a, generic, Gv)
        rows.append(m)
        rows2.append(m2)
    report(a.name + " [head]", rows)
    report(a.name + " [emb+powerset]", rows2)
    print(f"  {time.time() - t0:.0f}s", flush=True)
