"""The shipped text robot selector alone under the shared 5-fold CV (ember_training's code, the
real teacher, int8 table, read back through ember.engine.robot_selector). ~1 min per fold on CPU.

    .venv/bin/python research/robot_selection/selector_cv.py [FOLDS]   # e.g. 0,1 (default: all)
"""

import sys
import time

import torch

torch.set_num_threads(2)
from common import CACHE, data, report, set_metrics, split  # noqa: E402

from ember.engine.robot_selector import RobotSelector  # noqa: E402
from ember_training.robot_selection.config import SelectorConfig  # noqa: E402
from ember_training.robot_selection.selector import save_selector, train_selector  # noqa: E402
from ember_training.robot_selection.teacher import MiniLMTeacher  # noqa: E402

tasks, folds, _ = data()
teacher = MiniLMTeacher(CACHE / "minilm.npz")
rows = []
for f in [int(x) for x in sys.argv[1].split(",")] if len(sys.argv) > 1 else range(5):
    tr, te = split(folds, f)
    t0 = time.time()
    arrays, info = train_selector([tasks[i] for i in tr], SelectorConfig(), 0, teacher)
    sel = RobotSelector(save_selector(arrays, CACHE / f"selector_fold{f}.npz"), 5)
    picks = [sel.select(tasks[i].task) for i in te]
    sets = [p.chosen if p else [0] for p in picks]
    rows.append(set_metrics([list(tasks[i].robots) for i in te], sets, [s[0] for s in sets]))
    print(f"fold {f}: " + " ".join(f"{k}={v:.3f}" for k, v in rows[-1].items()) + f" ({time.time() - t0:.0f}s)", flush=True)
report("text robot selector (int8, 128-d, 20k words)", rows)
