"""Stage 2, instruction tuning: LLaVA-Instruct + VQA v2; SFT (+ KL distillation with a teacher file)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import InstructStage
from ..distill import distill_kl


def instruct_loss(model: nn.Module, batch: dict, st: InstructStage) -> tuple[torch.Tensor, dict[str, float]]:
    out = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["prompt_lengths"], batch["labels"])
    sft = out.lm_loss
    if "teacher_ids" not in batch:  # no teacher file: SFT only (Adam makes the 0.7 scale immaterial)
        return st.sft_weight * sft, {"sft": sft.item()}
    logits = out.lm_logits[:, :-1]  # position t predicts the token at t+1
    ids, tlog, mask = batch["teacher_ids"][:, 1:], batch["teacher_logits"][:, 1:], batch["teacher_mask"][:, 1:]
    v, k = logits.shape[-1], ids.shape[-1]
    kl = distill_kl(logits.reshape(-1, v), ids.reshape(-1, k), tlog.reshape(-1, k), mask.reshape(-1), st.distill_temperature)
    loss = st.sft_weight * sft + st.distill_weight * kl
    return loss, {"sft": sft.item(), "distill": kl.item(), "distilled_tokens": float(mask.sum().item())}
