"""Stage 4, reasoning: SFT on chain of thought + robot set + action plan, plus reasoning smoothness."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ReasoningStage
from .incidents import heads_loss


def smoothness_loss(states: torch.Tensor) -> torch.Tensor:
    """Mean squared change of the pooled reasoning state between consecutive layers [B, L, D]."""
    if states.shape[1] < 2:
        return states.sum() * 0.0
    return (states[:, 1:] - states[:, :-1]).float().pow(2).mean()


def reasoning_loss(model: nn.Module, batch: dict, st: ReasoningStage) -> tuple[torch.Tensor, dict[str, float]]:
    """SFT + smoothness; with head_weight > 0 also stage 3's head losses on the same forward
    (the heads read the prefix, whose decoder states move while the decoder learns to answer)."""
    out = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["prompt_lengths"], batch["labels"])
    smooth = smoothness_loss(out.reasoning_states)
    loss = st.sft_weight * out.lm_loss + st.smoothness_weight * smooth
    logs = {"sft": out.lm_loss.item(), "smoothness": smooth.item()}
    if st.head_weight > 0:
        heads, head_logs = heads_loss(out, batch, st.confidence_weight)
        loss = loss + st.head_weight * heads
        logs.update(head_logs)
    return loss, logs
