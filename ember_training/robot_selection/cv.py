"""`ember-eval robot-selection --cv K --config C --data FILE.json [--json OUT]`: grouped K-fold CV.

Per fold (ember_training.robot_selection.folds, the one fold assignment):

1. the train folds' rows (both dataset files, rows untouched) are written to a fold folder that
   becomes the run's `data.robot_selection_dir`: the tokenizer, every stage, the teacher
   distillation and the threshold calibration see train-fold tasks only;
2. `ember-train` stages 1-4 (+ the robot-selection recipe when the config enables it);
3. export of the final checkpoint to an INT8 bundle (ember_training.export);
4. the real engine (ember.engine.EmberEngine) on the held-out fold: robot selection from the
   heads (ember.eval.robot_selection, paired with the built-in neutral frames as ember-eval does),
   and a generated plan scored against the multi-robot reference (step-to-robot accuracy, BLEU);
5. baselines on the same split: always-{Drone}, TF-IDF + one-vs-rest logistic regression, and
   the issue's strongest one, MiniLM sentence embeddings (the offline teacher) + kNN; for the
   plans, the majority plan of the training folds (`majority_plan`: per-position most common
   order, step text and robot), written for every held-out task.

The report (JSON) has every metric per fold and mean/std over folds; a PNG shows them.
The robot side imports this module lazily (only for --cv): it needs torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.fsutil import json_text
from ember.labels import ROBOT_DISPLAY_NAMES, ROBOT_TYPES

from ..data.robot_selection import read_rows
from .folds import DEFAULT_SEED, grouped_folds, normalize_task, split
from .tasks import MULTI_FILE, SINGLE_FILE, RobotTask, load_tasks, resolve_files

log = logging.getLogger("ember_training.robot_selection.cv")
SCHEMA = "ember.eval.robot_selection_cv/1"
HEADLINE = ("exact_match", "jaccard", "top1_hit", "micro_f1", "macro_f1")


# ---------------------------------------------------------------------------- data per fold
def write_split(data_path: str | Path, indices: Sequence[int], dest: Path) -> Path:
    """Copy the rows at `indices` (RobotTask.index: positions in the single file, or in the multi file
    when it is the only one) into `dest` as they are, with the other file's rows of the same tasks
    (matched by normalised text: a user's two files need not list the same tasks in the same order)."""
    single, multi = resolve_files(data_path)
    primary = single or multi
    rows = read_rows(primary, primary.name)
    chosen = [rows[i] for i in indices]
    keys = {_row_key(r) for r in chosen} - {None}
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in ((single, SINGLE_FILE), (multi, MULTI_FILE)):
        if src is None:
            continue
        picked = chosen if src == primary else [r for r in read_rows(src, name) if _row_key(r) in keys]
        (dest / name).write_text(json.dumps(picked, ensure_ascii=False, indent=1), encoding="utf-8")
    return dest


def _row_key(row: object) -> str | None:
    """A raw row's task text, normalised (the join key of the two files), or None."""
    text = row.get("input") if isinstance(row, dict) else None
    return normalize_task(text) if isinstance(text, str) and text.strip() else None


def check_no_leak(train: Sequence[RobotTask], test: Sequence[RobotTask]) -> None:
    """No held-out task text (normalised) among the training tasks."""
    seen = {normalize_task(t.task) for t in train}
    leaked = [t.task for t in test if normalize_task(t.task) in seen]
    if leaked:
        raise RuntimeError(f"test-fold tasks found in the training split: {leaked[:3]}")


# ---------------------------------------------------------------------------- plan metrics
def plan_lines(steps: Sequence[tuple[int, str, str]]) -> str:
    """Plan text in the training target's format: '1. subtask [Robot]' lines."""
    names = dict(zip(ROBOT_TYPES, ROBOT_DISPLAY_NAMES, strict=False))
    return "\n".join(f"{o}. {d.strip()} [{names.get(r, r)}]" for o, d, r in steps)


def plan_metrics(refs: Sequence[Sequence[tuple[int, str, int]]], hyps: Sequence[Sequence[tuple[int, str, str]]]) -> dict:
    """Step-to-robot assignment accuracy (the k-th generated step's robot vs the k-th reference
    step's, by execution order; missing steps count wrong), plan rate and corpus BLEU of the plan
    text against the reference plan text."""
    correct = total = with_plan = 0
    ref_txt, hyp_txt = [], []
    for ref, hyp in zip(refs, hyps, strict=True):
        hyp = list(hyp)
        with_plan += bool(hyp)
        for k, (_, _, robot) in enumerate(ref):
            total += 1
            correct += k < len(hyp) and hyp[k][2] == ROBOT_TYPES[robot]
        ref_txt.append(plan_lines([(o, d, ROBOT_TYPES[r]) for o, d, r in ref]))
        hyp_txt.append(plan_lines(hyp))
    return {"step_robot_accuracy": correct / max(total, 1), "plan_rate": with_plan / max(len(refs), 1),
            "plan_bleu": bleu(hyp_txt, ref_txt)}


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU-4 (sacrebleu, default tokenisation), 0..100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)


# ---------------------------------------------------------------------------- baselines
def set_metrics(gold, sets, top1) -> dict:
    from ember.eval.metrics import robot_selection_metrics

    m = robot_selection_metrics([list(g) for g in gold], sets, top1=top1)
    return {k: float(m[k]) for k in HEADLINE}


def baseline_always_drone(train: list[RobotTask], test: list[RobotTask]) -> dict:
    return set_metrics([t.robots for t in test], [[0]] * len(test), [0] * len(test))


def majority_plan(train: Sequence[RobotTask]) -> list[tuple[int, str, str]]:
    """The plan baseline, from the training tasks' reference plans only: as many steps as the most
    common plan length; the k-th step has the most common k-th execution order, the most common
    k-th step text and the majority robot of the training plans' k-th steps (ties: the first in
    sorted order). The same plan for every task."""
    from collections import Counter

    def mode(values):
        counts = Counter(values)
        return min(counts, key=lambda v: (-counts[v], v))

    plans = [t.steps for t in train if t.steps]
    if not plans:
        return []
    n = mode([len(p) for p in plans])
    out = []
    for k in range(n):
        kth = [p[k] for p in plans if len(p) > k]
        out.append((mode([o for o, _, _ in kth]), mode([d for _, d, _ in kth]), ROBOT_TYPES[mode([r for _, _, r in kth])]))
    return out


def baseline_majority_plan(train: list[RobotTask], test: list[RobotTask]) -> dict:
    """Plan metrics of `majority_plan(train)` written for every test task (no generation)."""
    plan = majority_plan(train)
    return plan_metrics([t.steps for t in test], [plan] * len(test))


def ovr_probs(x_train, y_train: np.ndarray, x_test, c: float, max_iter: int = 3000) -> np.ndarray:
    """One-vs-rest logistic regression: P(robot in set) [N_test, robots] from 0/1 label rows
    `y_train` [N_train, robots] (a robot every training row has, or none has, is constant).
    Features may be dense or sparse."""
    from sklearn.linear_model import LogisticRegression

    probs = np.zeros((x_test.shape[0], y_train.shape[1]))
    for r in range(y_train.shape[1]):
        y = y_train[:, r]
        if y.min() == y.max():
            probs[:, r] = y[0]
            continue
        probs[:, r] = LogisticRegression(C=c, max_iter=max_iter).fit(x_train, y).predict_proba(x_test)[:, 1]
    return probs


def baseline_tfidf_lr(train: list[RobotTask], test: list[RobotTask], c: float = 10.0) -> dict:
    """TF-IDF (unigrams, sublinear tf) + one-vs-rest logistic regression, 0.5 thresholds."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from .metrics import select
    from .recipe import label_matrix

    vec = TfidfVectorizer(sublinear_tf=True)
    xtr = vec.fit_transform([t.task for t in train])
    xte = vec.transform([t.task for t in test])
    sets, top = select(ovr_probs(xtr, label_matrix(train), xte, c), 0.5)
    return set_metrics([t.robots for t in test], sets, top)


def knn_scores(train_vecs: np.ndarray, train_labels: np.ndarray, test_vecs: np.ndarray, k: int = 5,
               temperature: float = 0.05) -> np.ndarray:
    """Per-robot scores [N_test, 5]: the k most cosine-similar training rows vote with their label
    rows, weighted by exp(similarity / temperature)."""
    sims = test_vecs @ train_vecs.T
    out = np.zeros((len(test_vecs), train_labels.shape[1]))
    for j, row in enumerate(sims):
        idx = np.argsort(-row)[:k]
        w = np.exp((row[idx] - row[idx].max()) / temperature)
        out[j] = (w[:, None] * train_labels[idx]).sum(0) / w.sum()
    return out


def baseline_minilm_knn(train: list[RobotTask], test: list[RobotTask], teacher, k: int = 5) -> dict:
    """all-MiniLM-L6-v2 sentence embeddings (`teacher.embed`) + weighted kNN (k=5), 0.5 votes."""
    from .metrics import select
    from .recipe import label_matrix

    scores = knn_scores(teacher.embed([t.task for t in train]), label_matrix(train), teacher.embed([t.task for t in test]), k)
    sets, top = select(scores, 0.5)
    return set_metrics([t.robots for t in test], sets, top)


# ---------------------------------------------------------------------------- one fold
def train_fold(config_path: str | Path, robot_dir: Path, out: Path, data_dir: str | None,
               teacher_cache: Path | None, overrides: dict | None = None) -> Path:
    """Stages 1-4 (+ recipe) on the fold's train rows; returns the checkpoint to export."""
    from ember_training.config import apply_overrides, load_config
    from ember_training.trainer import Trainer

    cfg = load_config(config_path)
    cfg.data.robot_selection_dir = str(robot_dir)
    if cfg.robot_selection.enabled and teacher_cache is not None and cfg.robot_selection.teacher_cache is None:
        cfg.robot_selection.teacher_cache = str(teacher_cache)
    cfg.data.val_fraction = 0.0  # the held-out fold is the evaluation; a --set may change this
    cfg = apply_overrides(cfg, overrides or {})
    Trainer(cfg, out, data_dir, resume=True).run([1, 2, 3, 4])
    recipe = out / "robot_selection" / "final.pt"
    return recipe if recipe.is_file() else out / "stage4_reasoning" / "final.pt"


def export_fold(checkpoint: Path, bundle: Path) -> dict:
    """INT8 bundle of the fold's checkpoint (ember-export's path: thresholds, selector, prompt budget)."""
    from ember_training.export.bundle_writer import bundle_size_bytes
    from ember_training.export.cli import export_checkpoint

    meta = export_checkpoint(checkpoint, bundle, "int8")
    return {"bundle_mb": bundle_size_bytes(bundle) / 1e6, "robot_thresholds": meta["robot_thresholds"],
            "robot_selector": meta.get("robot_selector")}


def evaluate_fold(bundle: Path, test: list[RobotTask], max_new_tokens: int, threads: int = 1) -> tuple[dict, list[dict]]:
    """The engine on the held-out tasks: selection metrics (heads) and plan metrics (generation)."""
    from ember.engine import EmberEngine
    from ember.eval.metrics import robot_selection_metrics
    from ember.eval.scenes import neutral_frames

    engine = EmberEngine(bundle, threads=threads)
    frames = neutral_frames()
    sets, scores, plans, rows = [], [], [], []
    for i, t in enumerate(test):
        a = engine.analyze(frames[i % len(frames)], task=t.task, max_new_tokens=max_new_tokens)
        pred = [ROBOT_TYPES.index(r) for r in a.robot_types]
        steps = [(s.order, s.description, s.robot_type) for s in a.steps]
        sets.append(pred)
        scores.append(a.robot_scores)
        plans.append(steps)
        rows.append({"index": t.index, "task": t.task, "gold": [ROBOT_TYPES[r] for r in t.robots],
                     "pred": list(a.robot_types), "scores": [round(float(x), 4) for x in a.robot_scores],
                     "plan": plan_lines(steps), "robot_source": a.robot_source})
    m = robot_selection_metrics([t.robots for t in test], sets, scores=np.asarray(scores))
    metrics = {k: float(m[k]) for k in HEADLINE}
    if max_new_tokens > 0:
        metrics.update(plan_metrics([t.steps for t in test], plans))
    return metrics, rows


# ---------------------------------------------------------------------------- the CV run
def run_cv(config: str | Path, data: str | Path, k: int = 5, seed: int = DEFAULT_SEED, work: str | Path = "build/robot_cv",
           data_dir: str | None = None, max_new_tokens: int = 160, folds: Sequence[int] | None = None,
           threads: int = 1, overrides: dict | None = None) -> dict[str, Any]:
    tasks = load_tasks(data)
    fold_of = grouped_folds([t.task for t in tasks], [t.robots for t in tasks], k, seed)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    teacher_cache = work / "teacher_cache.npz"
    from .teacher import MiniLMTeacher

    teacher = MiniLMTeacher(teacher_cache)
    per_fold: list[dict] = []
    for f in folds if folds is not None else range(k):
        t0 = time.time()
        tr, te = split(fold_of, f)
        train, test = [tasks[i] for i in tr], [tasks[i] for i in te]
        check_no_leak(train, test)
        fdir = work / f"fold{f}"
        robot_dir = write_split(data, [t.index for t in train], fdir / "robot_selection")
        assert len(load_tasks(robot_dir)) == len(train)
        ckpt = train_fold(config, robot_dir, fdir / "run", data_dir, teacher_cache, overrides)
        t_train = time.time() - t0
        bundle = fdir / "bundle"
        if bundle.exists():
            shutil.rmtree(bundle)
        exported = export_fold(ckpt, bundle)
        model, rows = evaluate_fold(bundle, test, max_new_tokens, threads)
        baselines = {"tfidf_lr": baseline_tfidf_lr(train, test), "minilm_knn": baseline_minilm_knn(train, test, teacher),
                     "always_drone": baseline_always_drone(train, test)}
        if "plan_rate" in model:
            baselines["majority_plan"] = baseline_majority_plan(train, test)
        record = {
            "fold": f, "n_train": len(train), "n_test": len(test), "checkpoint": str(ckpt),
            "train_seconds": round(t_train, 1), "seconds": round(time.time() - t0, 1), **exported,
            "model": model, "baselines": baselines, "majority_plan": plan_lines(majority_plan(train)), "rows": rows,
        }
        (fdir / "result.json").write_text(json_text(record))
        per_fold.append(record)
        log.info("fold %d: model %s | tfidf %s | minilm+knn %s", f, _fmt(model), _fmt(record["baselines"]["tfidf_lr"]),
                 _fmt(record["baselines"]["minilm_knn"]))
    return summarise(per_fold, config, data, k, seed, max_new_tokens)


def _fmt(m: dict) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in m.items() if isinstance(v, float))


def mean_std(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def summarise(per_fold: list[dict], config, data, k: int, seed: int, max_new_tokens: int) -> dict[str, Any]:
    def agg(getter) -> dict[str, dict[str, float]]:
        keys = getter(per_fold[0]).keys()
        return {key: mean_std([getter(r)[key] for r in per_fold]) for key in keys}

    summary = {
        "schema": SCHEMA, "complete": len(per_fold) == k, "config": str(config), "data": str(data), "k": k,
        "seed": seed, "folds_run": [r["fold"] for r in per_fold], "max_new_tokens": max_new_tokens,
        "images": "builtin:neutral-scenes",
        "model": agg(lambda r: r["model"]),
        "baselines": {name: agg(lambda r, n=name: r["baselines"][n]) for name in per_fold[0]["baselines"]},
        "bundle_mb": mean_std([r["bundle_mb"] for r in per_fold]),
        "per_fold": [{k2: v for k2, v in r.items() if k2 != "rows"} for r in per_fold],
    }
    m = summary["model"]
    for name, b in summary["baselines"].items():
        if name != "always_drone":
            summary[f"ratio_to_{name}"] = {key: m[key]["mean"] / b[key]["mean"] if b[key]["mean"] else None
                                           for key in (*HEADLINE, *PLAN_RATIO) if key in b and key in m}
    return summary


PLAN_RATIO = ("step_robot_accuracy", "plan_bleu")
BASELINE_NAMES = {"tfidf_lr": "TF-IDF + LR", "minilm_knn": "MiniLM + kNN", "always_drone": "always Drone",
                  "majority_plan": "majority plan"}


def _cell(stat: dict | None) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat else "-"


def format_summary(s: dict) -> str:
    """The summary as a text table: a row per metric; the model, the baselines and the model's
    ratios to them as columns, each as wide as its widest cell plus a two-space gap."""
    names = [n for n in BASELINE_NAMES if n in s["baselines"]]
    ratios = [n for n in names if f"ratio_to_{n}" in s]
    header = ["metric", "model (INT8 bundle)", *(BASELINE_NAMES[n] for n in names),
              *("ratio/" + n.split("_")[0] for n in ratios)]
    rows = []
    for key in s["model"]:
        ratio_cells = [s[f"ratio_to_{n}"].get(key) for n in ratios]
        rows.append([key, _cell(s["model"][key]), *(_cell(s["baselines"][n].get(key)) for n in names),
                     *(f"{r:.2f}" if r is not None else "-" for r in ratio_cells)])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        return cells[0].ljust(widths[0]) + "".join(f"  {cell:>{w}}" for cell, w in zip(cells[1:], widths[1:], strict=True))

    title = f"grouped {s['k']}-fold CV ({len(s['folds_run'])} folds run), mean ± std over folds"
    return "\n".join([title, "", *(line(r) for r in [header, *rows])])


def plot_summary(s: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(HEADLINE)
    series = [("model (INT8)", s["model"])] + [(BASELINE_NAMES[n], s["baselines"][n]) for n in BASELINE_NAMES
                                               if HEADLINE[0] in s["baselines"].get(n, {})]
    x = np.arange(len(keys))
    w = 0.8 / len(series)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1.3]})
    ax = axes[0]
    for j, (name, d) in enumerate(series):
        ax.bar(x + (j - (len(series) - 1) / 2) * w, [d[k]["mean"] for k in keys], w, yerr=[d[k]["std"] for k in keys],
               capsize=3, label=name)
    for target, key in ((0.60, "exact_match"), (0.78, "jaccard"), (0.95, "top1_hit")):
        i = keys.index(key)
        ax.hlines(target, i - 0.4, i + 0.4, colors="k", linestyles="dashed")
    ax.set_xticks(x, keys)
    ax.set_ylim(0, 1)
    ax.set_title(f"robot selection, grouped {s['k']}-fold CV (dashes: issue targets)")
    ax.legend(loc="upper left", fontsize=8)
    ax2 = axes[1]
    plan_keys = [k for k in ("step_robot_accuracy", "plan_rate") if k in s["model"]]
    if plan_keys:
        base = s["baselines"].get("majority_plan")
        px = np.arange(len(plan_keys))
        pw = 0.4 if base else 0.8
        ax2.bar(px - (pw / 2 if base else 0), [s["model"][k]["mean"] for k in plan_keys], pw,
                yerr=[s["model"][k]["std"] for k in plan_keys], capsize=3, label="model (INT8)")
        if base:
            ax2.bar(px + pw / 2, [base[k]["mean"] for k in plan_keys], pw, yerr=[base[k]["std"] for k in plan_keys],
                    capsize=3, label=BASELINE_NAMES["majority_plan"], color="tab:gray")
            ax2.legend(loc="upper left", fontsize=8)
        ax2.set_xticks(px, plan_keys)
        ax2.set_ylim(0, 1)
        if "plan_bleu" in s["model"]:
            title = f"plans: BLEU {s['model']['plan_bleu']['mean']:.1f} ± {s['model']['plan_bleu']['std']:.1f}"
            if base:
                title += f" (majority plan {base['plan_bleu']['mean']:.1f})"
            ax2.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- CLI
def add_cv_arguments(p: argparse.ArgumentParser) -> None:
    """The --cv options of `ember-eval robot-selection` (added by ember.eval.cli)."""
    p.add_argument("--cv", type=int, default=None, metavar="K", help="grouped K-fold CV: train, export INT8, evaluate per fold")
    p.add_argument("--config", help="training config for --cv (config/train/small.yaml)")
    p.add_argument("--work", default="build/robot_cv", help="--cv work directory (fold runs, bundles; resumable)")
    p.add_argument("--data-dir", help="--cv: datasets in the official layouts (default: generated, as ember-train)")
    p.add_argument("--folds", help="--cv: comma-separated fold ids to run (default: all)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="--cv fold seed")
    p.add_argument("--plot", help="--cv: PNG of the results (default: next to --json)")
    p.add_argument("--plan-tokens", type=int, default=160, help="--cv: tokens generated per task for the plan (0: no plans)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="--cv: config override, e.g. robot_selection.steps=200 (dotted, YAML value)")


def check_cv_arguments(args: argparse.Namespace) -> tuple[dict[str, Any], list[int] | None]:
    """The `--set` overrides and `--folds` of a `--cv` run, after checking that the config with
    those overrides, the data, the fold count and the fold ids all hold; raises ValueError
    (ConfigError), RuntimeError (DataError) or OSError naming what does not."""
    import yaml

    from ember_training.config import apply_overrides, load_config

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad --set {item!r}; expected KEY=VALUE")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"bad --set {item!r}: the value is not YAML ({getattr(e, 'problem', None) or e})") from None
    apply_overrides(load_config(args.config), overrides)
    tasks = load_tasks(args.data)
    grouped_folds([t.task for t in tasks], [t.robots for t in tasks], args.cv, args.seed)
    if not args.folds:
        return overrides, None
    try:
        folds = [int(x) for x in args.folds.split(",")]
    except ValueError:
        raise ValueError(f"bad --folds {args.folds!r}; expected comma-separated fold ids") from None
    if bad := [f for f in folds if not 0 <= f < args.cv]:
        raise ValueError(f"--folds {args.folds}: --cv {args.cv} has folds 0..{args.cv - 1}, not {bad[0]}")
    if len(set(folds)) < len(folds):
        twice = next(f for f in folds if folds.count(f) > 1)
        raise ValueError(f"--folds {args.folds} names fold {twice} twice")
    return overrides, folds


def main_from_args(args: argparse.Namespace) -> int:
    import sys

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, int(getattr(args, "threads", 1) or 1)))
    if not args.config:
        print("ember-eval: error: --cv needs --config", file=sys.stderr)
        return 2
    try:  # every argument checked before the first fold trains (minutes each)
        overrides, folds = check_cv_arguments(args)
    except (ValueError, OSError, RuntimeError) as e:  # ConfigError, DataError, a missing file
        print(f"ember-eval: error: {e}", file=sys.stderr)
        return 2
    s = run_cv(args.config, args.data, args.cv, args.seed, args.work, args.data_dir, args.plan_tokens, folds,
               int(getattr(args, "threads", 1) or 1), overrides)
    print(format_summary(s))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json_text(s))
        print(f"wrote {args.json}")
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if plot:
        print(f"wrote {plot_summary(s, plot)}")
    return 0
