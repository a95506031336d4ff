"""Stage 1, alignment: image/caption pairs; contrastive (InfoNCE) + captioning."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AlignmentStage


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, image_key: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; other captions of the same image are not counted as negatives."""
    sim = scale * image.float() @ text.float().T
    same = image_key[:, None] == image_key[None, :]
    eye = torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(sim), device=sim.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2


def alignment_loss(model: nn.Module, batch: dict, st: AlignmentStage) -> tuple[torch.Tensor, dict[str, float]]:
    out = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["prompt_lengths"], batch["labels"])
    contrastive = contrastive_loss(out.image_embed, out.text_embed, out.logit_scale, batch["image_key"])
    loss = st.contrastive_weight * contrastive + st.caption_weight * out.lm_loss
    return loss, {"contrastive": contrastive.item(), "caption": out.lm_loss.item(), "logit_scale": out.logit_scale.item()}
