"""Which robot does each plan step get? Step-to-robot accuracy and BLEU of plans under the shared
5-fold CV, all written on the majority plan's step texts (so only the robots differ), against
the reference plans:

* the majority plan of the training folds (cv.majority_plan, what `--cv` reports as baseline);
* the nearest training task's plan (MiniLM cosine; a retrieval reference, not shipped);
* a per-position logistic regression from the task's MiniLM embedding to the k-th step's robot;
* one logistic regression from [task, step text, position] (MiniLM) to the step's robot, applied to
  the reference steps' texts and to the majority plan's (how much the step text decides);
* the same on the shipped text selector's task vectors (`selector.fit_step_head`, what the bundle
  ships), for C in 1..100; needs `selector_cv.py all` first (it leaves cache/selector_fold*.npz).

    .venv/bin/python research/robot_selection/exp_step_head.py      # ~1 min with the teacher cache
"""

import numpy as np  # noqa: E402
from common import CACHE, data, split, teacher

from ember.engine.robot_selector import RobotSelector  # noqa: E402
from ember.labels import ROBOT_TYPES  # noqa: E402
from ember_training.robot_selection.cv import majority_plan, plan_metrics  # noqa: E402
from ember_training.robot_selection.metrics import mean_std  # noqa: E402
from ember_training.robot_selection.selector import fit_step_head  # noqa: E402


def show(name, rows):
    ms = mean_std(rows)
    print(f"{name:45s} step-robot {ms['step_robot_accuracy']['mean']:.3f} ± {ms['step_robot_accuracy']['std']:.3f}"
          f"  BLEU {ms['plan_bleu']['mean']:.1f} ± {ms['plan_bleu']['std']:.1f}", flush=True)


def with_robots(plan, robots):
    return [(o, d, ROBOT_TYPES[int(r)]) for (o, d, _), r in zip(plan, robots, strict=False)]


tasks, folds, _ = data()
T = teacher()
E = T.embed([t.task for t in tasks])
rows: dict[str, list] = {"majority plan": [], "nearest training plan (MiniLM)": [], "step head on MiniLM, C=10": []}
for f in range(5):
    tr, te = split(folds, f)
    maj = majority_plan([tasks[i] for i in tr])
    refs = [tasks[i].steps for i in te]
    rows["majority plan"].append(plan_metrics(refs, [maj] * len(te)))
    nearest = [tasks[tr[j]].steps for j in (E[te] @ E[tr].T).argmax(1)]
    rows["nearest training plan (MiniLM)"].append(plan_metrics(refs, [[(o, d, ROBOT_TYPES[r]) for o, d, r in p] for p in nearest]))
    w, b = fit_step_head(E[tr], [tasks[i].steps for i in tr], 10.0)
    rows["step head on MiniLM, C=10"].append(plan_metrics(refs, [with_robots(maj, np.argmax(w @ E[i] + b, 1)) for i in te]))
    from sklearn.linear_model import LogisticRegression

    def step_x(i, text, k):
        return np.concatenate([E[i], T.embed([text])[0], np.eye(6, dtype=np.float32)[min(k, 5)]])

    xs = [step_x(i, d, k) for i in tr for k, (_, d, _) in enumerate(tasks[i].steps)]
    clf = LogisticRegression(C=10.0, max_iter=3000).fit(np.stack(xs), [r for i in tr for _, _, r in tasks[i].steps])
    for name, plan_of in (("task + step text on the reference steps", lambda i: tasks[i].steps), ("task + step text on the majority plan", lambda i, maj=maj: maj)):
        hyps = [with_robots(plan_of(i), clf.predict(np.stack([step_x(i, d, k) for k, (_, d, _) in enumerate(plan_of(i))]))) for i in te]
        rows.setdefault(name, []).append(plan_metrics(refs, hyps))
for name, r in rows.items():
    show(name, r)

if all((CACHE / f"selector_fold{f}.npz").is_file() for f in range(5)):
    for c in (1.0, 3.0, 10.0, 30.0, 100.0):
        r = []
        for f in range(5):
            tr, te = split(folds, f)
            sel = RobotSelector(CACHE / f"selector_fold{f}.npz", len(ROBOT_TYPES))
            dim = sel.vectors.shape[1]

            def vec(text, sel=sel, dim=dim):
                v = sel.embed(text)
                return np.zeros(dim, np.float32) if v is None else v

            w, b = fit_step_head(np.stack([vec(tasks[i].task) for i in tr]), [tasks[i].steps for i in tr], c)
            maj = majority_plan([tasks[i] for i in tr])
            r.append(plan_metrics([tasks[i].steps for i in te],
                                  [with_robots(maj, np.argmax(w @ vec(tasks[i].task) + b, 1)) for i in te]))
        show(f"step head on the shipped selector, C={c:g}", r)
else:
    print("(run selector_cv.py all first for the shipped selector's rows)")
