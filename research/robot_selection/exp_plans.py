"""The multi-robot plans as extra supervision for the teacher's label-set head (finding 7).

    .venv/bin/python research/robot_selection/exp_plans.py        # ~2 min

Each task of the data has a 4-step plan whose steps name a robot type. Under the shared 5-fold
CV (plans of the training split only), rows are added to the label-set LR on MiniLM embeddings,
with sample weight w:
* sub: each step's text, labelled {its robot};
* sub-in-context: "task + step" text, labelled {the step's robot};
* planset: the task, labelled with the set of robots its plan uses;
* planmaj: the task, labelled with the robot(s) holding most of its steps.
"""

import numpy as np
from common import report, set_metrics, split
from exp_heads import E, T, decode_powerset, folds, gold, keys, tasks, texts
from sklearn.linear_model import LogisticRegression

STEPS = [(i, text, robot) for i, t in enumerate(tasks) for _order, text, robot in t.steps]
STEP_TASK = np.array([i for i, _, _ in STEPS])
STEP_ROBOT = np.array([r for _, _, r in STEPS])
E_STEP = T.embed([text for _, text, _ in STEPS])
E_STEP_IN_TASK = T.embed([f"{texts[i]} {text}" for i, text, _ in STEPS])


def plan_set(i: int) -> tuple[int, ...]:
    return tuple(sorted({r for _, _, r in tasks[i].steps}))


def plan_majority(i: int) -> tuple[int, ...]:
    counts = np.bincount([r for _, _, r in tasks[i].steps], minlength=5)
    return tuple(np.flatnonzero(counts == counts.max()).tolist())


def extra_rows(mode: str, tr: list[int]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Rows (features, label sets) that the plans of the training split add."""
    if mode in ("sub", "sub-in-context"):
        idx = np.flatnonzero(np.isin(STEP_TASK, tr))
        feats = E_STEP if mode == "sub" else E_STEP_IN_TASK
        return feats[idx], [(int(STEP_ROBOT[j]),) for j in idx]
    label = plan_set if mode == "planset" else plan_majority
    return E[tr], [label(i) for i in tr]


def label_set_lr(X, sets, weights, X_test, C=10.0):
    classes = sorted(set(sets))
    index = {c: i for i, c in enumerate(classes)}
    m = LogisticRegression(C=C, max_iter=5000).fit(X, [index[k] for k in sets], sample_weight=weights)
    return m.predict_proba(X_test), [classes[i] for i in m.classes_]


def run(mode: str, w: float) -> None:
    rows = []
    for f in range(5):
        tr, te = split(folds, f)
        X, sets, weights = E[tr], [keys[i] for i in tr], np.ones(len(tr))
        if w > 0:
            X_extra, extra = extra_rows(mode, tr)
            X, sets = np.vstack([X, X_extra]), sets + extra
            weights = np.concatenate([weights, np.full(len(extra), w)])
        Q, classes = label_set_lr(X, sets, weights, E[te])
        pred, top, _ = decode_powerset(Q, classes, "jac")
        rows.append(set_metrics([gold[i] for i in te], pred, top))
    report(f"teacher {mode} w={w}" if w else "teacher, no plans", rows)


if __name__ == "__main__":
    print(len(STEPS), "plan steps")
    run("", 0)
    for mode in ("sub", "planset", "planmaj"):
        for w in (0.05, 0.1, 0.25, 0.5):
            run(mode, w)
    for w in (0.05, 0.1, 0.25):
        run("sub-in-context", w)
