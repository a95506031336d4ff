"""Train the bundle's text robot selector: the MiniLM teacher distilled into a static word encoder.

Why (research/robot_selection/README.md): heads on the teacher's sentence embedding are the best
robot selectors measured here, but the teacher (22M parameters, 30k WordPiece vocabulary) does not
fit the robots' budget. A word-level static encoder does, and keeps most of it:

1. vocabulary: the `words` most frequent whole words of the teacher's vocabulary + every word of
   the train tasks; each word's vector starts as the teacher's embedding of that word alone, in a
   `dim`-wide PCA of the teacher space (the PCA is fit on the distillation targets);
2. distillation (tokenlearn-style, Adam with cosine decay): vectors and per-word pooling weights are trained so that the
   weighted mean of a text's word vectors matches the teacher's embedding of the whole text
   (1 - cosine), over the train tasks, their augmentations and clause recombinations, the train
   plans' subtasks and a task-independent generic corpus (teacher words, random phrases);
3. int8 per-row quantisation of the table;
4. head: multinomial logistic regression from the (quantised) task vector to the robot *sets* seen
   in the train split (a label-set model; the engine reads its marginals and picks the set of
   highest expected Jaccard).

Only the train split's tasks are read (plus the generic corpus). The engine side is
`ember.engine.robot_selector` (same tokenisation: `words_of`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ember.engine.robot_selector import RobotSelector, pool_rows, words_of
from ember.labels import NUM_ROBOT_TYPES

from .augment import generic_texts, recombine, task_variants, teacher_words
from .config import SelectorConfig
from .tasks import RobotTask
from .teacher import MiniLMTeacher

log = logging.getLogger("ember_training.robot_selection.selector")


def selector_vocabulary(tasks: list[RobotTask], n_words: int) -> list[str]:
    """Sorted unique words: the first `n_words` teacher words and every word of the train tasks."""
    vocab = set(teacher_words()[:n_words])
    vocab.update(w for t in tasks for w in words_of(t.task))
    return sorted(w for w in vocab if w.isascii())


def distillation_texts(tasks: list[RobotTask], sc: SelectorConfig, seed: int) -> list[str]:
    """Train tasks, their augmentations and recombinations, train subtasks, then the generic corpus."""
    texts = [t.task for t in tasks]
    out = list(texts)
    out += task_variants(texts, sc.variants_per_task, seed)
    out += recombine(texts, sc.recombinations, seed)
    out += sorted({s for t in tasks for _, s, _ in t.steps})
    out += generic_texts(sc.words, sc.phrases, seed)
    return out


def _encode(batch: list[str], index: dict[str, int], max_words: int = 64) -> torch.Tensor:
    """Word rows (+1; 0 = padding / unknown word) of each text, padded."""
    rows = [[index[w] + 1 for w in words_of(s) if w in index][:max_words] for s in batch]
    ids = torch.zeros(len(rows), max(1, max(map(len, rows))), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)] = torch.tensor(r)
    return ids


def _pool(vectors: torch.Tensor, weight_logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    w = F.softplus(weight_logits[ids]) * (ids > 0)
    return (vectors[ids] * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: x ~= q * scale[:, None]."""
    scale = np.abs(x).max(1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(x / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def train_selector(tasks: list[RobotTask], sc: SelectorConfig, seed: int, teacher: MiniLMTeacher,
                   log_fn: Callable[[dict], None] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The selector's arrays (ember.engine.robot_selector's file format) and a summary."""
    from sklearn.linear_model import LogisticRegression

    t0 = time.time()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    vocab = selector_vocabulary(tasks, sc.words)
    index = {w: i for i, w in enumerate(vocab)}
    texts = distillation_texts(tasks, sc, seed)
    targets = teacher.embed(texts).astype(np.float32)
    word_vecs = teacher.embed(vocab).astype(np.float32)
    mean = targets.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(targets - mean, full_matrices=False)
    proj = vt[: sc.dim].T  # [384, dim]
    tgt = torch.from_numpy((targets - mean) @ proj)
    table = torch.nn.Parameter(torch.from_numpy(np.concatenate([np.zeros((1, sc.dim), np.float32),
                                                                (word_vecs - mean) @ proj]).astype(np.float32)))
    weight_logits = torch.nn.Parameter(torch.zeros(len(vocab) + 1))
    opt = torch.optim.Adam([table, weight_logits], lr=sc.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, sc.steps) / sc.steps)))
    history: list[dict] = []
    first_cos = 0.0
    for step in tqdm(range(1, sc.steps + 1), desc="robot selector", unit="step", leave=False, mininterval=5):
        bi = rng.integers(0, len(texts), sc.batch_size)
        z = _pool(table, weight_logits, _encode([texts[i] for i in bi], index))
        cos = F.cosine_similarity(z, tgt[bi], dim=-1).mean()
        loss = 1 - cos
        first_cos = float(cos.detach()) if step == 1 else first_cos
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step == 1 or step % 50 == 0 or step == sc.steps:
            rec = {"step": step, "distill_loss": round(1 - float(cos.detach()), 4)}
            history.append(rec)
            if log_fn:
                log_fn(rec)
    vectors, scales = quantize_rows(table.detach()[1:].numpy())
    weights = F.softplus(weight_logits.detach()[1:]).numpy().astype(np.float32)
    # head on the quantised encoder, exactly as the engine computes it
    enc = _QuantisedEncoder(vocab, vectors, scales, weights)
    x = np.stack([enc.embed(t.task) for t in tasks])
    sets = sorted({t.robots for t in tasks})
    y = np.array([sets.index(t.robots) for t in tasks])
    membership = np.zeros((len(sets), NUM_ROBOT_TYPES), np.uint8)
    for i, s in enumerate(sets):
        membership[i, list(s)] = 1
    if len(sets) == 1:  # a single label set: constant head
        head_w, head_b = np.zeros((1, sc.dim), np.float32), np.zeros(1, np.float32)
    else:
        lr = LogisticRegression(C=sc.head_c, max_iter=5000).fit(x, y)
        head_w = np.zeros((len(sets), sc.dim), np.float32)
        head_b = np.full(len(sets), -1e4, np.float32)  # sets the solver dropped never win
        head_w[lr.classes_], head_b[lr.classes_] = softmax_rows(lr)
    arrays = {
        "words": np.array([w.encode("ascii") for w in vocab]),
        "vectors": vectors, "scales": scales, "weights": weights,
        "head_w": head_w, "head_b": head_b, "sets": membership,
    }
    step_w, step_b = fit_step_head(x, [t.steps for t in tasks], sc.step_head_c) if sc.step_head_c > 0 else (None, None)
    if step_w is not None:
        arrays.update(step_w=step_w, step_b=step_b)
    summary = {"selector_words": len(vocab), "selector_dim": sc.dim, "selector_sets": len(sets),
               "selector_texts": len(texts), "selector_plan_steps": 0 if step_w is None else int(step_w.shape[0]),
               "selector_distill_cos_first": round(first_cos, 4),
               "selector_distill_cos": round(1 - history[-1]["distill_loss"], 4) if history else None,
               "selector_seconds": round(time.time() - t0, 1)}
    log.info("robot selector: %s", summary)
    return arrays, summary


def softmax_rows(lr) -> tuple[np.ndarray, np.ndarray]:
    """A fitted LogisticRegression as softmax rows (coef [C, d], intercept [C]), one per class of
    `lr.classes_`: a binary fit's single logit split into two opposite halves (the same softmax)."""
    if len(lr.classes_) > 2:
        return lr.coef_, lr.intercept_
    return (np.stack([-lr.coef_[0] / 2, lr.coef_[0] / 2]),
            np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2]))


def fit_step_head(x: np.ndarray, plans: list[tuple], c: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The plan-step robot head: for the k-th step of the training plans (k up to the longest
    plan), a multinomial logistic regression from the task vector `x` [N, d] to that step's robot
    over the tasks whose plan has a k-th step. Returns (step_w [K, R, d], step_b [K, R]); a robot
    never seen at step k gets bias -1e4, a step with one robot only a constant head. (None, None)
    when no task has a plan."""
    from sklearn.linear_model import LogisticRegression

    k_max = max((len(p) for p in plans), default=0)
    if k_max == 0:
        return None, None
    step_w = np.zeros((k_max, NUM_ROBOT_TYPES, x.shape[1]), np.float32)
    step_b = np.full((k_max, NUM_ROBOT_TYPES), -1e4, np.float32)
    for k in range(k_max):
        rows = [i for i, p in enumerate(plans) if len(p) > k]
        y = np.array([plans[i][k][2] for i in rows])
        classes = np.unique(y)
        if len(classes) == 1:
            step_b[k, classes[0]] = 0.0
            continue
        lr = LogisticRegression(C=c, max_iter=5000).fit(x[rows], y)
        step_w[k, lr.classes_], step_b[k, lr.classes_] = softmax_rows(lr)
    return step_w, step_b


class _QuantisedEncoder:
    """The engine's pooling (ember.engine.robot_selector.pool_rows) on in-memory arrays, for the head fit."""

    def __init__(self, vocab: list[str], vectors: np.ndarray, scales: np.ndarray, weights: np.ndarray) -> None:
        self.index = {w: i for i, w in enumerate(vocab)}
        self.vectors, self.scales, self.weights = vectors, scales, weights

    def embed(self, text: str) -> np.ndarray:
        rows = np.array([self.index[w] for w in words_of(text) if w in self.index], dtype=np.int64)
        vec = pool_rows(rows, self.vectors, self.scales, self.weights)
        return np.zeros(self.vectors.shape[1], np.float32) if vec is None else vec


def save_selector(arrays: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write the selector file (uncompressed npz) and check the engine reads it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    RobotSelector(tmp, NUM_ROBOT_TYPES)
    tmp.replace(path)
    return path
