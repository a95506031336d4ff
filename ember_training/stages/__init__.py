"""The four training stages: each maps (model, batch, stage config) to (loss, logged values).

1 alignment  0.5 contrastive + 0.5 captioning
2 instruct   0.7 SFT + 0.3 KL distillation at T=2 (SFT alone without a teacher file)
3 incidents  0.6 head cross-entropy (+ confidence) + 0.4 two-view consistency
4 reasoning  SFT on chain of thought, robot set and plan + 0.1 reasoning smoothness
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .alignment import alignment_loss
from .incidents import incidents_loss
from .instruct import instruct_loss
from .reasoning import reasoning_loss

LossFn = Callable[[nn.Module, dict, object], tuple[torch.Tensor, dict[str, float]]]

STAGE_LOSSES: dict[str, LossFn] = {
    "alignment": alignment_loss,
    "instruct": instruct_loss,
    "incidents": incidents_loss,
    "reasoning": reasoning_loss,
}

__all__ = ["STAGE_LOSSES", "LossFn"]
