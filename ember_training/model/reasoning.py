"""Reasoning module: a small transformer over the decoder's prefix states."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [B, N, D] over positions where mask [B, N] is true (0 where none)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class ReasoningBlock(nn.Module):
    """Pre-norm transformer encoder layer (bidirectional over the prefix, padding masked)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class ReasoningModule(nn.Module):
    """Linear(d_model -> dim) then `layers` transformer blocks, pooled by a masked mean.

    Returns the final pooled state [B, dim] (after a LayerNorm) and the per-layer pooled
    states [B, L, dim] that the stage-4 smoothness loss reads.
    """

    def __init__(self, d_model: int, dim: int, layers: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, dim)
        self.blocks = nn.ModuleList(ReasoningBlock(dim, heads, ff_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, states: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """states [B, N, d_model], mask [B, N] (true = prefix; None = all) -> (pooled, per-layer)."""
        x = self.proj(states)
        bias = None
        if mask is not None:
            keep = mask.bool()[:, None, None, :]
            bias = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, float("-inf"))
        pooled = []
        for block in self.blocks:
            x = block(x, bias)
            pooled.append(x.mean(1) if mask is None else masked_mean(x, mask))
        return self.norm(pooled[-1]), torch.stack(pooled, dim=1)
