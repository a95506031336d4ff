"""Robot selection on the public robot-selection dataset (issue 7).

* `folds` — the one grouped, stratified k-fold assignment every experiment and the CV use;
* `tasks` — the 198 tasks joined across the single-robot and multi-robot files;
* `baselines` — always-{Drone}, TF-IDF + one-vs-rest logistic regression, MiniLM + kNN;
* `recipe` — the training recipe of the robot text pathway (teacher distillation + heads);
* `cv` — `ember-eval robot-selection --cv K --config C --data FILE` (train, export INT8,
  evaluate the bundle with the engine, per fold).

Nothing here is imported by the robot side at import time (the eval CLI imports `cv` lazily).
"""
