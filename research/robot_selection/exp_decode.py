"""Plans of the integrated CV's fold bundles (build/robot_cv/fold*/bundle, left by `ember-eval
robot-selection --cv 5 ...` run from the repository root) decoded again with a no-repeat n-gram
ban; N = 0 reproduces the run's greedy plans exactly.

    .venv/bin/python research/robot_selection/exp_decode.py N      # ~2 min per N
"""
import json
import sys

import numpy as np
from common import data

from ember.engine import EmberEngine
from ember.engine.engine import preprocess
from ember.eval.scenes import neutral_frames
from ember_training.robot_selection.cv import plan_metrics
from ember_training.robot_selection.metrics import mean_std

N = int(sys.argv[1])  # no-repeat n-gram size, 0 = plain greedy
tasks, folds, _ = data()
frames = neutral_frames()

def decode(e, image, task, n, max_new=160):
    pixels = preprocess(image, e.image_size, e.mean, e.std)
    ids = e._prompt_ids(task, max_new)
    with e._lock:
        visual = e._vision.run(["visual_embeds"], {"pixel_values": pixels})[0]
        out = e._kv.start(ids, visual, visual.shape[1] + len(ids) + max_new)
        heads = {k: out[k][0] for k in ("robot_logits", "confidence_logit", "incident_logits", "place_logits")}
        gen = []
        logits = out["logits"][0].copy()
        try:
            for _ in range(max_new):
                if n and len(gen) >= n - 1:
                    prefix = tuple(gen[len(gen) - n + 1:]) if n > 1 else ()
                    for j in range(len(gen) - n + 1):
                        if tuple(gen[j:j + n - 1]) == prefix:
                            logits[gen[j + n - 1]] = -np.inf
                nxt = int(np.argmax(logits))
                if nxt == e.eos_id:
                    break
                gen.append(nxt)
                logits = e._kv.step(nxt).copy()
        finally:
            e._kv.release()
    text = e.tokenizer.decode(gen, skip_special_tokens=False)
    return e._to_analysis(heads, text, len(gen), task)

rows = []
for f in range(5):
    res = json.load(open(f"build/robot_cv/fold{f}/result.json"))
    e = EmberEngine(f"build/robot_cv/fold{f}/bundle", threads=1)
    idx = [r["index"] for r in res["rows"]]
    hyps = []
    for i, k in enumerate(idx):
        a = decode(e, frames[i % len(frames)], tasks[k].task, N)
        hyps.append([(s.order, s.description, s.robot_type) for s in a.steps])
    m = plan_metrics([tasks[k].steps for k in idx], hyps)
    rows.append(m)
    print(f, {k: round(v, 3) for k, v in m.items()}, flush=True)
print("N", N, {k: f"{v['mean']:.3f}±{v['std']:.3f}" for k, v in mean_std(rows).items()})
