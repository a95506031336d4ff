"""Stage 3, incidents and robots: head cross-entropy (explicit negatives used, unknown masked),
the confidence head, and consistency of the heads between two augmented views of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import IncidentsStage
from .losses import masked_bce, multilabel_correct, place_loss


def head_losses(out, batch: dict) -> dict[str, torch.Tensor]:
    """Per-head losses of one view (0, still in the graph, for a head without known labels)."""
    return {
        "incident": masked_bce(out.incident_logits, batch["incidents"]),
        "place": place_loss(out.place_logits, batch["places"]),
        "robot": masked_bce(out.robot_logits, batch["robots"]),
    }


def confidence_target(out, batch: dict) -> torch.Tensor:
    """How right the model's current answers are, per row: the mean of (a) the incident answer is
    right (the top incident is a known positive; for a row without positives, every known incident
    is predicted absent) and (b) the robot set (sigmoid > 0.5) equals the label set; each only
    where the row has those labels. The confidence head learns to predict it (stage 3, 4)."""
    with torch.no_grad():
        inc, rob = batch["incidents"], batch["robots"]
        top = out.incident_logits.argmax(1, keepdim=True)
        has_pos = (inc == 1).any(1)
        incident_ok = torch.where(has_pos, inc.gather(1, top).squeeze(1) == 1, multilabel_correct(out.incident_logits, inc))
        robot_ok = multilabel_correct(out.robot_logits, rob)
        parts = torch.stack([incident_ok.float(), robot_ok.float()], 1)
        known = torch.stack([(inc >= 0).any(1), (rob >= 0).any(1)], 1).float()
        return (parts * known).sum(1) / known.sum(1).clamp(min=1)


def heads_loss(out, batch: dict, confidence_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean head cross-entropy + confidence_weight x confidence BCE, and the values to log."""
    heads = head_losses(out, batch)
    target = confidence_target(out, batch)
    conf = F.binary_cross_entropy_with_logits(out.confidence_logit.float(), target)
    logs = {f"{k}_ce": v.item() for k, v in heads.items()}
    logs.update(confidence=conf.item(), confidence_target=target.mean().item())
    return torch.stack(list(heads.values())).mean() + confidence_weight * conf, logs


def _probs(out) -> list[torch.Tensor]:
    return [
        torch.sigmoid(out.incident_logits.float()), torch.sigmoid(out.robot_logits.float()),
        F.softmax(out.place_logits.float(), -1), torch.sigmoid(out.confidence_logit.float()),
    ]


def consistency_loss(a, b) -> torch.Tensor:
    """Mean squared difference of every head's probabilities between two views of one input."""
    return torch.stack([F.mse_loss(p, q) for p, q in zip(_probs(a), _probs(b), strict=True)]).mean()


class _Half:
    """One view's slice of a two-view output."""

    def __init__(self, out, sl: slice) -> None:
        for name in ("incident_logits", "place_logits", "robot_logits", "confidence_logit"):
            setattr(self, name, getattr(out, name)[sl])


def incidents_loss(model: nn.Module, batch: dict, st: IncidentsStage) -> tuple[torch.Tensor, dict[str, float]]:
    b = batch["pixel_values"].shape[0]
    pixels = torch.cat([batch["pixel_values"], batch["pixel_values_2"]])
    twice = [batch[k].repeat(2, *[1] * (batch[k].dim() - 1)) for k in ("input_ids", "attention_mask", "prompt_lengths")]
    out = model(pixels, *twice)  # both views in one forward (one DDP pass)
    v1, v2 = _Half(out, slice(0, b)), _Half(out, slice(b, 2 * b))
    ce, logs = heads_loss(v1, batch, st.confidence_weight)
    consistency = consistency_loss(v1, v2)
    logs["consistency"] = consistency.item()
    return st.ce_weight * ce + st.consistency_weight * consistency, logs
