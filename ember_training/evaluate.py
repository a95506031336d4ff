"""Held-out evaluation after stages 3 and 4: head metrics, per-robot thresholds, and (stage 4)
what greedy generation answers, parsed with ember.prompting.parse_generation as the engine does.

The numbers go into the stage's final checkpoint (`metrics`, `robot_thresholds`: ember-export
copies them into bundle.json) and into <stage dir>/eval.json.
"""

from __future__ import annotations

import numpy as np
import torch
from tokenizers import Tokenizer

from ember.labels import ROBOT_TYPES
from ember.prompting import parse_generation

from .data.dataset import Collator, StageDataset
from .tokenizer import eos_id, pad_id

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


@torch.no_grad()
def head_outputs(model: torch.nn.Module, dataset: StageDataset, tok: Tokenizer, device: torch.device,
                 batch_size: int) -> dict[str, np.ndarray]:
    """Sigmoid/softmax head outputs and labels over a dataset (no augmentation expected)."""
    model.eval()
    collate = Collator(pad_id(tok))
    keys = ("incident", "place", "robot", "confidence")
    out: dict[str, list] = {k: [] for k in keys} | {"incidents": [], "places": [], "robots": []}
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        res = model(batch["pixel_values"].to(device), batch["input_ids"].to(device),
                    batch["attention_mask"].to(device), batch["prompt_lengths"].to(device))
        out["incident"].append(torch.sigmoid(res.incident_logits.float()).cpu())
        out["place"].append(torch.softmax(res.place_logits.float(), -1).cpu())
        out["robot"].append(torch.sigmoid(res.robot_logits.float()).cpu())
        out["confidence"].append(torch.sigmoid(res.confidence_logit.float()).cpu())
        for k in ("incidents", "places", "robots"):
            out[k].append(batch[k])
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def f1(pred: np.ndarray, label: np.ndarray) -> float:
    tp = float((pred & label).sum())
    denom = float(pred.sum() + label.sum())
    return 2 * tp / denom if denom else 1.0


def robot_thresholds(probs: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per robot type, the threshold with the best accuracy on the held-out rows (ties: nearest
    0.5; 0.5 where a type has no positive). Accuracy, not F1: on a few rows F1 prefers a
    threshold that selects a rare robot for every task."""
    out = []
    for r in range(len(ROBOT_TYPES)):
        known = labels[:, r] >= 0
        y = labels[known, r] == 1
        if not y.any():
            out.append(0.5)
            continue
        acc = np.array([((probs[known, r] >= t) == y).mean() for t in THRESHOLD_GRID])
        best = np.flatnonzero(acc == acc.max())
        out.append(float(THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]]))
    return out


def select(probs: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Robot selection as the engine makes it: above threshold, else the top robot."""
    chosen = probs >= np.asarray(thresholds)
    none = ~chosen.any(1)
    chosen[none, probs[none].argmax(1)] = True
    return chosen


def head_metrics(h: dict[str, np.ndarray]) -> tuple[dict[str, float], list[float]]:
    """Incident accuracy/F1 on known labels, place top-1, robot-set exact match, confidence calibration."""
    m: dict[str, float] = {}
    known = h["incidents"] >= 0
    if known.any():
        pred = h["incident"] >= 0.5
        m["incident_accuracy"] = float((pred == (h["incidents"] == 1))[known].mean())
        m["incident_f1"] = f1(pred & known, (h["incidents"] == 1) & known)
    has_place = (h["places"] == 1).any(1)
    if has_place.any():
        m["place_top1"] = float((h["places"][has_place, h["place"][has_place].argmax(1)] == 1).mean())
    rows = (h["robots"] >= 0).all(1)
    thresholds = robot_thresholds(h["robot"][rows], h["robots"][rows]) if rows.any() else [0.5] * len(ROBOT_TYPES)
    if rows.any():
        chosen = select(h["robot"][rows], thresholds)
        exact = (chosen == (h["robots"][rows] == 1)).all(1)
        m["robot_exact_match"] = float(exact.mean())
        m["robot_f1"] = f1(chosen, h["robots"][rows] == 1)
        m["confidence_mean"] = float(h["confidence"][rows].mean())
        if exact.any():
            m["confidence_when_right"] = float(h["confidence"][rows][exact].mean())
        if (~exact).any():
            m["confidence_when_wrong"] = float(h["confidence"][rows][~exact].mean())
    m["eval_samples"] = float(len(h["incident"]))
    return m, thresholds


@torch.no_grad()
def generation_metrics(model, dataset: StageDataset, tok: Tokenizer, device: torch.device,
                       max_new_tokens: int) -> dict[str, float]:
    """Greedy generation on robot-selection rows: robot set parsed from the text vs the label,
    and whether multi-robot rows produce plan steps."""
    model.eval()
    exact, plans, n_multi = [], 0, 0
    for i, s in enumerate(dataset.samples):
        if s.image is not None:
            continue
        item = dataset[i]
        gen = model.generate(item["pixel_values"][None].to(device), torch.tensor([item["prompt_ids"]], device=device),
                             max_new_tokens=max_new_tokens, eos_token_id=eos_id(tok))
        parsed = parse_generation(tok.decode(gen.token_ids, skip_special_tokens=False))
        exact.append(set(parsed.robot_types) == {ROBOT_TYPES[r] for r in s.robot_set})
        if s.steps:
            n_multi += 1
            plans += bool(parsed.steps)
    out = {"generated_robot_exact_match": float(np.mean(exact))} if exact else {}
    if n_multi:
        out["generated_plan_rate"] = plans / n_multi
    return out
