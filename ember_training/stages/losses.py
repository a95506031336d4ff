"""Loss pieces shared by the stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE over known entries: labels 1 (positive), 0 (explicit negative), -1 (masked)."""
    mask = labels >= 0
    if not bool(mask.any()):
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0).float(), reduction="none")
    return (loss * mask).sum() / mask.sum()


def place_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Single-label place head (softmax): CE towards the positive place(s), plus -log(1 - p) for
    explicit negatives; unknown places (-1) are masked."""
    logp = F.log_softmax(logits.float(), dim=-1)
    pos = (labels == 1).float()
    neg = labels == 0
    terms = []
    has_pos = pos.sum(1) > 0
    if bool(has_pos.any()):
        target = pos[has_pos] / pos[has_pos].sum(1, keepdim=True)
        terms.append(-(target * logp[has_pos]).sum(1).mean())
    if bool(neg.any()):
        p_neg = logp.exp()[neg].clamp(max=1 - 1e-6)
        terms.append(-torch.log1p(-p_neg).mean())
    if not terms:
        return logits.sum() * 0.0
    return sum(terms) / len(terms)


def multilabel_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] bool: every known label of the row is predicted right at sigmoid 0.5 (True if none known)."""
    wrong = ((logits > 0).long() != labels) & (labels >= 0)
    return ~wrong.any(1)


def next_token_logits(lm_logits: torch.Tensor, aligned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair logits at t with a per-position tensor at t+1 (HF shift): returns (logits[:, :-1], aligned[:, 1:])."""
    return lm_logits[:, :-1], aligned[:, 1:]
