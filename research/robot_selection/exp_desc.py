"""Do the robots' own descriptions (capability phrases in the instruction) add to the teacher?"""

import torch

torch.set_num_threads(1)
from common import np, report, set_metrics, split  # noqa: E402
from exp_heads import E, T, decode_powerset, folds, gold, keys, powerset_probs, tasks  # noqa: E402

from ember.labels import ROBOT_TYPES  # noqa: E402

# phrases per robot from the instruction block
ins = tasks[0].instruction
phr, owner = [], []
cur = None
for line in ins.splitlines():
    line = line.strip()
    name = line.rstrip(":")
    if line.endswith(":") and name in ("Drone", "Humanoid", "Robot with Legs", "Robot with Wheels", "Underwater Robot"):
        cur = name
        continue
    if cur and ":" in line:
        field, rest = line.split(":", 1)
        for p in rest.split(","):
            p = p.strip()
            if p:
                phr.append(f"{p}")
                owner.append(cur)
print(len(phr), "phrases", ROBOT_TYPES)
P = T.embed(phr)
S = E @ P.T  # [N, phrases]
robot_of = np.array([[1.0 if o == ROBOT_TYPES[r] or o.lower().startswith(ROBOT_TYPES[r].lower()) else 0 for o in owner] for r in range(5)])
print(robot_of.sum(1))


def run(name, X, C=10, mode="jac"):
    rows = []
    for f in range(5):
        tr, te = split(folds, f)
        Q, cl = powerset_probs(X[tr], [keys[i] for i in tr], X[te], C)
        s, t, _ = decode_powerset(Q, cl, mode)
        rows.append(set_metrics([gold[i] for i in te], s, t))
    report(name, rows)


run("E only", E)
for w in (0.5, 1.0, 2.0):
    run(f"E + sims w={w}", np.hstack([E, w * S]))
run("sims only", S)
