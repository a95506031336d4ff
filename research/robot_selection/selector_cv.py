"""The shipped text robot selector alone under the shared 5-fold CV (ember_training's code, the
real teacher, int8 table, read back through ember.engine.robot_selector). ~1 min per fold on CPU.

    .venv/bin/python research/robot_selection/selector_cv.py [FOLDS] [KEY=VALUE ...]
    # FOLDS e.g. 0,1 or all; KEY=VALUE overrides SelectorConfig fields (steps=3000 head_c=3)
"""

import sys
import time

import torch

torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
from common import CACHE, data, report, set_metrics, split  # noqa: E402

from ember.engine.robot_selector import RobotSelector  # noqa: E402
from ember_training.robot_selection.config import SelectorConfig  # noqa: E402
from ember_training.robot_selection.selector import save_selector, train_selector  # noqa: E402
from ember_training.robot_selection.teacher import MiniLMTeacher  # noqa: E402

tasks, folds, _ = data()
teacher = MiniLMTeacher(CACHE / "minilm.npz")
overrides = {k: float(v) if "." in v or "e" in v else int(v) for k, v in (a.split("=") for a in sys.argv[2:])}
config = SelectorConfig(**overrides)
rows = []
for f in range(5) if len(sys.argv) < 2 or sys.argv[1] == "all" else [int(x) for x in sys.argv[1].split(",")]:
    tr, te = split(folds, f)
    t0 = time.time()
    arrays, info = train_selector([tasks[i] for i in tr], config, 0, teacher)
    sel = RobotSelector(save_selector(arrays, CACHE / f"selector_fold{f}.npz"), 5)
    picks = [sel.select(tasks[i].task) for i in te]
    sets = [p.chosen if p else [0] for p in picks]
    rows.append(set_metrics([list(tasks[i].robots) for i in te], sets, [s[0] for s in sets]))
    print(f"fold {f}: " + " ".join(f"{k}={v:.3f}" for k, v in rows[-1].items()) + f" ({time.time() - t0:.0f}s)", flush=True)
report(f"text robot selector {overrides or '(defaults)'}", rows)
