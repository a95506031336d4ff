"""Fusion: project visual tokens into the decoder's embedding space."""

from __future__ import annotations

import torch
from torch import nn


class BottleneckAdapter(nn.Module):
    """Down-project, GELU, dropout, up-project (residual added by the caller)."""

    def __init__(self, dim: int, bottleneck: int, dropout: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)  # starts as the identity mapping
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.drop(self.act(self.down(x))))


class Fusion(nn.Module):
    """Linear(vision_dim -> d_model), LayerNorm, then x + adapter(x)."""

    def __init__(self, vision_dim: int, d_model: int, adapter_dim: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Linear(vision_dim, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.adapter = BottleneckAdapter(d_model, adapter_dim, dropout)

    def forward(self, visual_tokens: torch.Tensor) -> torch.Tensor:
        """[B, V, vision_dim] -> [B, V, d_model]."""
        x = self.norm(self.proj(visual_tokens))
        return x + self.adapter(x)
