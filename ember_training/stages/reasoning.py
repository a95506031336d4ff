"""Stage 4, reasoning: SFT on chain of thought + robot set + action plan, plus reasoning smoothness."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ReasoningStage


def smoothness_loss(states: torch.Tensor) -> torch.Tensor:
    """Mean squared change of the pooled reasoning state between consecutive layers [B, L, D]."""
    if states.shape[1] < 2:
        return states.sum() * 0.0
    return (states[:, 1:] - states[:, :-1]).float().pow(2).mean()


def reasoning_loss(model: nn.Module, batch: dict, st: ReasoningStage) -> tuple[torch.Tensor, dict[str, float]]:
    out = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["prompt_lengths"], batch["labels"])
    smooth = smoothness_loss(out.reasoning_states)
    loss = st.sft_weight * out.lm_loss + st.smoothness_weight * smooth
    return loss, {"sft": out.lm_loss.item(), "smoothness": smooth.item()}
