"""The robot-selection recipe: MiniLM knowledge distilled into the edge model's text pathway.

Runs after stage 4 (ember_training.trainer calls `run_recipe` when `robot_selection.enabled`),
from `stage4_reasoning/final.pt` to `robot_selection/final.pt`. Only the train split's tasks
are ever read (the trainer's robot-selection directory; cv.py points it at the train folds).

What ships is still the bundle's own model: the teacher (all-MiniLM-L6-v2) runs offline here.

1. Teacher targets. The teacher embeds (a) the train tasks, (b) label-preserving augmentations
   of them, (c) recombinations of their clauses, (d) the train plans' subtask texts and (e) a
   task-independent generic corpus (teacher-vocabulary words and random phrases over them).
   A teacher classifier (the embedding -> label-set logistic regression, a powerset model)
   is fit on the train tasks; its robot marginals are soft targets for every distillation text.
2. Losses on the model's *robot-head input* (the reasoning module's pooled prefix state):
   * distill: 1 - cos(pooled, PCA_k(teacher embedding)), PCA fit on the distillation targets
     down to reasoning_dim (a fixed projection: no training-only parameters);
   * teacher_soft: BCE(robot logits, teacher marginals) on the distillation texts;
   * supervised: BCE(robot logits, label set) on the (augmented) train tasks;
   * lm: the stage-4 SFT loss on the same tasks (reasoning, answer, plan), so generation stays.
   The vision tower and fusion are frozen; their outputs for the incident pool are computed once.
3. Per-robot thresholds: inner grouped CV of the teacher classifier on the train split
   (never the scored fold), stored as `robot_thresholds` in the checkpoint -> bundle.json.
4. The text robot selector (ember_training.robot_selection.selector, when `selector.enabled`):
   the teacher distilled into a static word encoder + label-set head, written beside the
   checkpoint as robot_selector.npz; ember-export ships it in the bundle, and the engine lets it
   decide text tasks (the robot head above still decides camera frames without a task).

Two more hooks act earlier (only when enabled): the BPE corpus gets the generic words
(`tokenizer_corpus_extra`) and stage 1 starts from token embeddings set to the teacher's vector
of each token's text (`init_token_embeddings`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ember.engine.robot_selector import SELECTOR_FILE
from ember.labels import NUM_ROBOT_TYPES

from .augment import augment_task, generic_texts, recombine, task_variants, teacher_words
from .config import RobotSelectionConfig
from .folds import inner_folds
from .metrics import select, set_metrics
from .selector import save_selector, train_selector
from .tasks import RobotTask, load_tasks
from .teacher import TEACHER_DIM, MiniLMTeacher

log = logging.getLogger("ember_training.robot_selection")
RECIPE_DIR = "robot_selection"


# ---------------------------------------------------------------------------- early hooks
def tokenizer_corpus_extra(rs: RobotSelectionConfig) -> list[str]:
    """Generic words added to the BPE corpus (task-independent), so most words are whole tokens."""
    if not rs.enabled or rs.generic_words <= 0:
        return []
    return list(teacher_words()[: rs.generic_words])


def token_texts(tok) -> list[str]:
    """The surface text of every token id (special tokens as they are)."""
    return [tok.decode([i], skip_special_tokens=False).strip() or "." for i in range(tok.get_vocab_size())]


@torch.no_grad()
def init_token_embeddings(model, tok, rs: RobotSelectionConfig, teacher: MiniLMTeacher | None = None) -> bool:
    """Set the decoder's token embeddings to `init_embeddings` x the teacher's vector of each token's
    text (PCA to d_model when d_model < 384). Returns whether anything was set."""
    if not rs.enabled or rs.init_embeddings <= 0:
        return False
    teacher = teacher or MiniLMTeacher(rs.teacher_cache)
    vecs = torch.from_numpy(teacher.embed(token_texts(tok)))
    d = model.decoder.wte.weight.shape[1]
    if d != TEACHER_DIM:
        vecs = pca_project(vecs, d)[0]
        vecs = F.normalize(vecs, dim=-1)
    n = min(vecs.shape[0], model.decoder.wte.weight.shape[0])
    model.decoder.wte.weight[:n] = vecs[:n].to(model.decoder.wte.weight.dtype) * rs.init_embeddings
    log.info("token embeddings of %d tokens initialised from the teacher (scale %.2f)", n, rs.init_embeddings)
    return True


def pca_project(x: torch.Tensor, k: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Centre and project rows of x onto their top-k principal directions (k <= dim)."""
    mu = x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x - mu, full_matrices=False)
    k = min(k, v.shape[0])
    proj = (x - mu) @ v[:k].T
    if proj.shape[1] < k:  # pragma: no cover - fewer samples than dims
        proj = F.pad(proj, (0, k - proj.shape[1]))
    return proj, {"mean": mu, "components": v[:k]}


# ---------------------------------------------------------------------------- teacher side
def label_matrix(tasks: list[RobotTask]) -> np.ndarray:
    y = np.zeros((len(tasks), NUM_ROBOT_TYPES), np.float32)
    for i, t in enumerate(tasks):
        y[i, list(t.robots)] = 1
    return y


class TeacherClassifier:
    """Teacher embedding -> label set (multinomial logistic regression over the seen sets);
    `marginals(X)` = P(robot in set) per robot."""

    def __init__(self, c: float) -> None:
        self.c = c

    def fit(self, x: np.ndarray, sets: list[tuple[int, ...]]) -> TeacherClassifier:
        from sklearn.linear_model import LogisticRegression

        self.sets = sorted(set(sets))
        index = {s: i for i, s in enumerate(self.sets)}
        y = np.array([index[s] for s in sets])
        self.constant = None
        if len(self.sets) == 1:
            self.constant = self.sets[0]
            return self
        self.lr = LogisticRegression(C=self.c, max_iter=3000).fit(x, y)
        self.m = np.zeros((len(self.lr.classes_), NUM_ROBOT_TYPES), np.float32)
        for row, cls in enumerate(self.lr.classes_):
            self.m[row, list(self.sets[cls])] = 1
        return self

    def marginals(self, x: np.ndarray) -> np.ndarray:
        if self.constant is not None:
            out = np.zeros((len(x), NUM_ROBOT_TYPES), np.float32)
            out[:, list(self.constant)] = 1
            return out
        return (self.lr.predict_proba(x) @ self.m).astype(np.float32)


def calibrate_thresholds(
    emb: np.ndarray, tasks: list[RobotTask], rs: RobotSelectionConfig, seed: int,
    grid: np.ndarray | None = None,
) -> tuple[list[float], dict[str, float]]:
    """Per-robot thresholds maximising exact-set + Jaccard of the teacher classifier's out-of-fold
    marginals under inner grouped CV of these (train-split) tasks. Returns (thresholds, OOF metrics)."""
    grid = np.round(np.arange(0.2, 0.71, 0.05), 2) if grid is None else grid
    texts = [t.task for t in tasks]
    sets = [t.robots for t in tasks]
    k = min(rs.inner_folds, len({t for t in texts}))
    fold_of = inner_folds(texts, sets, list(range(len(tasks))), k, seed)
    oof = np.zeros((len(tasks), NUM_ROBOT_TYPES), np.float32)
    for f in range(k):
        tr = [i for i, g in enumerate(fold_of) if g != f]
        te = [i for i, g in enumerate(fold_of) if g == f]
        clf = TeacherClassifier(rs.teacher_c).fit(emb[tr], [sets[i] for i in tr])
        oof[te] = clf.marginals(emb[te])
    gold = [list(s) for s in sets]

    def score(th):
        s, t = select(oof, th)
        m = set_metrics(gold, s, t)
        return m["exact"] + m["jaccard"], m

    th = np.full(NUM_ROBOT_TYPES, 0.5)
    best, _ = score(th)
    for _ in range(2):  # coordinate ascent, ties keep the value closest to 0.5
        for r in range(NUM_ROBOT_TYPES):
            cands = sorted(grid, key=lambda g: abs(g - 0.5))
            for g in cands:
                trial = th.copy()
                trial[r] = g
                val, _ = score(trial)
                if val > best + 1e-9:
                    best, th = val, trial
    _, metrics = score(th)
    return [float(x) for x in th], {f"inner_oof_{k2}": float(v) for k2, v in metrics.items()}


@dataclass
class RecipeData:
    """Everything the recipe trains on, built from the train split only."""

    tasks: list[RobotTask]
    labels: np.ndarray  # [N, 5]
    distill_texts: list[str]
    distill_targets: np.ndarray  # [M, 384] teacher embeddings
    soft_targets: np.ndarray  # [M, 5] teacher classifier marginals
    thresholds: list[float]
    info: dict[str, Any] = field(default_factory=dict)


def build_recipe_data(tasks: list[RobotTask], rs: RobotSelectionConfig, seed: int,
                      teacher: MiniLMTeacher | None = None) -> RecipeData:
    """Teacher targets for the train split `tasks` (+ the generic corpus)."""
    teacher = teacher or MiniLMTeacher(rs.teacher_cache)
    texts = [t.task for t in tasks]
    task_part = list(texts)
    task_part += task_variants(texts, rs.variants_per_task, seed)
    task_part += recombine(texts, rs.recombinations, seed)
    if rs.use_subtasks:
        task_part += sorted({s for t in tasks for _, s, _ in t.steps})
    generic = generic_texts(rs.generic_words, rs.generic_phrases, seed) if (rs.generic_words or rs.generic_phrases) else []
    distill = task_part + generic
    emb = teacher.embed(distill)
    task_emb = emb[: len(texts)]
    clf = TeacherClassifier(rs.teacher_c).fit(task_emb, [t.robots for t in tasks])
    soft = clf.marginals(emb)
    if rs.calibrate_thresholds and len(set(texts)) >= 2 * rs.inner_folds:
        thresholds, info = calibrate_thresholds(task_emb, tasks, rs, seed)
    else:
        thresholds, info = [0.5] * NUM_ROBOT_TYPES, {}
    info.update(n_tasks=len(tasks), n_task_texts=len(task_part), n_generic=len(generic))
    return RecipeData(tasks, label_matrix(tasks), distill, emb, soft, thresholds, info)


# ---------------------------------------------------------------------------- student side
@dataclass
class VisualPool:
    """Frozen fused visual tokens of the incident pool, with each image's labels."""

    embeds: torch.Tensor  # [K, V, d_model]
    incidents: list[np.ndarray | None]
    places: list[np.ndarray | None]


@torch.no_grad()
def visual_pool(model, samples, image_spec, limit: int, device, neutral: int = 4) -> VisualPool:
    """Visual tokens of up to `limit` labelled incident scenes plus `neutral` built-in neutral frames
    (ember.eval.scenes: what robot-selection evaluation pairs text-only tasks with), so the robot
    head learns to read the task whatever the frame."""
    from ember.eval.scenes import neutral_frames
    from ember_training.data.images import read_rgb, to_tensor_array

    chosen = list(samples[:limit])
    images = [read_rgb(str(s.image)) for s in chosen] + (neutral_frames(neutral) if neutral else [])
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images), 16):
        px = np.stack([to_tensor_array(img, image_spec.size, image_spec.mean, image_spec.std) for img in images[i:i + 16]])
        out.append(model.encode_image(torch.from_numpy(px).to(device)).float())
    model.train(was)
    blank = [None] * (len(images) - len(chosen))
    return VisualPool(torch.cat(out), [s.incidents for s in chosen] + blank, [s.places for s in chosen] + blank)


def _pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


class RecipeLoss:
    """The recipe's loss on one step (labelled tasks + distillation texts)."""

    def __init__(self, model, data: RecipeData, rs: RobotSelectionConfig, tok, pool: VisualPool,
                 max_prompt: int, max_target: int, seed: int, device) -> None:
        from ember_training.tokenizer import pad_id

        self.model, self.data, self.rs, self.tok, self.pool = model, data, rs, tok, pool
        self.max_prompt, self.max_target = max_prompt, max_target
        self.device = device
        self.pad = pad_id(tok)
        self.rng = random.Random(seed)
        dim = model.config.reasoning_dim
        proj, _ = pca_project(torch.from_numpy(data.distill_targets).float(), dim)
        self.targets = proj.to(device)
        self.soft = torch.from_numpy(data.soft_targets).to(device)
        self.labels = torch.from_numpy(data.labels).to(device)

    def _pooled(self, out) -> torch.Tensor:
        return self.model.reasoning.norm(out.reasoning_states[:, -1])

    def _visual(self, n: int) -> tuple[torch.Tensor, list[int]]:
        idx = [self.rng.randrange(self.pool.embeds.shape[0]) for _ in range(n)]
        return self.pool.embeds[idx], idx

    def __call__(self) -> tuple[torch.Tensor, dict[str, float]]:
        from ember_training.data.text import robot_target
        from ember_training.data.tokens import encode_prompt, encode_target

        rs, rng, model = self.rs, self.rng, self.model
        logs: dict[str, float] = {}
        total = torch.zeros((), device=self.device)
        # labelled train tasks: supervised BCE (+ stage-4 SFT)
        if rs.supervised_weight > 0 or rs.lm_weight > 0:
            bi = [rng.randrange(len(self.data.tasks)) for _ in range(rs.batch_size)]
            vis, vidx = self._visual(len(bi))
            rows, plens, labels = [], [], []
            for i, v in zip(bi, vidx, strict=False):
                t = self.data.tasks[i]
                text = augment_task(t.task, rng) if rng.random() < rs.augment_task_prob else t.task
                p = encode_prompt(self.tok, text, self.max_prompt)
                tg = []
                if rs.lm_weight > 0:
                    target = robot_target(t.task, t.robots, t.steps, _capabilities(t), self.pool.incidents[v],
                                          self.pool.places[v])
                    tg = encode_target(self.tok, target, self.max_target)
                rows.append(p + tg)
                plens.append(len(p))
                labels.append([-100] * len(p) + tg)
            ids, mask = _pad(rows, self.pad, self.device)
            lab = torch.full_like(ids, -100)
            for r, lb in enumerate(labels):
                lab[r, : len(lb)] = torch.tensor(lb, dtype=torch.long)
            out = model(None, ids, mask, torch.tensor(plens, device=self.device),
                        lab if rs.lm_weight > 0 else None, visual_embeds=vis)
            if rs.supervised_weight > 0:
                sup = F.binary_cross_entropy_with_logits(out.robot_logits.float(), self.labels[bi])
                total = total + rs.supervised_weight * sup
                logs["supervised"] = sup.item()
            if rs.lm_weight > 0 and out.lm_loss is not None:
                total = total + rs.lm_weight * out.lm_loss
                logs["lm"] = out.lm_loss.item()
        # distillation texts: cosine to the projected teacher embedding, BCE to teacher marginals
        if rs.distill_weight > 0 or rs.teacher_soft_weight > 0:
            di = [rng.randrange(len(self.data.distill_texts)) for _ in range(rs.distill_batch_size)]
            vis, _ = self._visual(len(di))
            rows = [encode_prompt(self.tok, self.data.distill_texts[i], self.max_prompt) for i in di]
            ids, mask = _pad(rows, self.pad, self.device)
            out = model(None, ids, mask, mask.sum(1), None, visual_embeds=vis)
            if rs.distill_weight > 0:
                cos = F.cosine_similarity(self._pooled(out).float(), self.targets[di], dim=-1).mean()
                total = total + rs.distill_weight * (1 - cos)
                logs["distill_cos"] = cos.item()
            if rs.teacher_soft_weight > 0:
                soft = F.binary_cross_entropy_with_logits(out.robot_logits.float(), self.soft[di])
                total = total + rs.teacher_soft_weight * soft
                logs["teacher_soft"] = soft.item()
        logs["loss"] = total.item()
        return total, logs


def _capabilities(task: RobotTask) -> dict[int, list[str]]:
    from ember_training.data.robot_selection import parse_capabilities

    return parse_capabilities(task.instruction) if task.instruction else {}


def train_recipe(model, tok, data: RecipeData, rs: RobotSelectionConfig, pool: VisualPool, max_prompt: int,
                 max_target: int, seed: int, device, weight_decay: float = 0.01, betas=(0.9, 0.95),
                 grad_clip: float = 1.0, min_lr_ratio: float = 0.1, log_fn=None) -> list[dict[str, float]]:
    """Run `rs.steps` optimizer steps of the recipe on `model` (vision and fusion frozen)."""
    torch.manual_seed(seed)
    model.vision.requires_grad_(False)
    model.fusion.requires_grad_(False)
    model.train()
    model.vision.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=rs.lr, betas=tuple(betas))
    warm = min(rs.warmup_steps, max(0, rs.steps - 1))

    def factor(s: int) -> float:
        if warm and s < warm:
            return (s + 1) / warm
        prog = min(1.0, (s - warm) / max(1, rs.steps - warm))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    loss_fn = RecipeLoss(model, data, rs, tok, pool, max_prompt, max_target, seed, device)
    history = []
    t0 = time.time()
    for step in range(1, rs.steps + 1):
        loss, logs = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
        opt.step()
        sched.step()
        logs.update(step=step, lr=sched.get_last_lr()[0], grad_norm=float(gn), time=round(time.time() - t0, 2))
        history.append(logs)
        if log_fn:
            log_fn(logs)
    model.eval()
    return history


# ---------------------------------------------------------------------------- trainer entry
def run_recipe(trainer) -> dict[str, Any]:
    """The recipe phase of an ember-train run (called by Trainer.run after stage 4)."""
    from ember_training.checkpoint_format import load_checkpoint, save_checkpoint
    from ember_training.data.dataset import ImageSpec
    from ember_training.model import EmberVLM
    from ember_training.tracking import plot_losses

    cfg, rs = trainer.cfg, trainer.cfg.robot_selection
    out_dir = Path(trainer.out) / RECIPE_DIR
    final = out_dir / "final.pt"
    if final.is_file():
        log.info("robot-selection recipe already complete: %s", final)
        return json.loads((out_dir / "summary.json").read_text()) if (out_dir / "summary.json").is_file() else {}
    start = Path(trainer.out) / "stage4_reasoning" / "final.pt"
    ckpt = load_checkpoint(start)
    device = trainer.ctx.device
    model = EmberVLM(cfg.model)
    model.load_state_dict(ckpt["model"])
    model.to(device)
    del ckpt
    tasks = load_tasks(trainer.dirs.robot_selection)
    seed = cfg.train.seed
    teacher = MiniLMTeacher(rs.teacher_cache)
    t0 = time.time()
    data = build_recipe_data(tasks, rs, seed, teacher)
    log.info("recipe data: %s (%.0fs)", data.info, time.time() - t0)
    m = cfg.model
    pool = visual_pool(model, trainer.cache.get("incidents"), ImageSpec(m.image_size, m.image_mean, m.image_std, False),
                       64, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    extra: dict[str, Any] = {}
    plots = [(metrics_path, out_dir / "loss.png", "robot-selection recipe")]
    if rs.selector.enabled:
        selector_path = out_dir / "selector_metrics.jsonl"
        with selector_path.open("w") as fh:
            arrays, selector_info = train_selector(tasks, rs.selector, seed, teacher,
                                                   log_fn=lambda r: fh.write(json.dumps(r) + "\n"))
        save_selector(arrays, out_dir / SELECTOR_FILE)
        extra["robot_selector"] = SELECTOR_FILE
        data.info.update(selector_info)
        plots.append((selector_path, out_dir / "selector_loss.png", "text robot selector: distillation"))
    with metrics_path.open("w") as fh:
        history = train_recipe(
            model, trainer.tok, data, rs, pool, cfg.data.max_prompt_tokens, cfg.data.max_target_tokens, seed,
            device, cfg.train.weight_decay, cfg.train.betas, cfg.train.grad_clip, cfg.train.min_lr_ratio,
            log_fn=lambda r: fh.write(json.dumps(r) + "\n"),
        )
    summary = {"steps": rs.steps, "seconds": round(time.time() - t0, 1), "thresholds": data.thresholds,
               "first": history[0] if history else None, "last": history[-1] if history else None, **data.info}
    save_checkpoint(final, model, cfg.to_dict(), trainer.tok, rs.steps,
                    extra={"stage": RECIPE_DIR, "robot_thresholds": data.thresholds, **extra,
                           "metrics": {k: v for k, v in data.info.items() if isinstance(v, float)}})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.tracking.plots:
        for src, png, title in plots:
            try:
                plot_losses(src, png, title)
            except Exception as exc:  # plots never fail a run
                log.warning("recipe loss plot %s failed: %s", png.name, exc)
    return summary
