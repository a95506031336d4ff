"""Task heads on the pooled reasoning state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ember.labels import NUM_INCIDENTS, NUM_PLACES, NUM_ROBOT_TYPES


@dataclass
class HeadOutputs:
    robot_logits: torch.Tensor  # [B, 5] multi-label (sigmoid)
    confidence_logit: torch.Tensor  # [B]
    incident_logits: torch.Tensor  # [B, 43] multi-label (sigmoid)
    place_logits: torch.Tensor  # [B, 49] single label (softmax)


class TaskHeads(nn.Module):
    """Robot types (5), confidence (1), incident labels (43) and places (49), in ember.labels order."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.robot = nn.Linear(dim, NUM_ROBOT_TYPES)
        self.confidence = nn.Linear(dim, 1)
        self.incident = nn.Linear(dim, NUM_INCIDENTS)
        self.place = nn.Linear(dim, NUM_PLACES)

    def forward(self, pooled: torch.Tensor) -> HeadOutputs:
        x = self.drop(pooled)
        return HeadOutputs(
            robot_logits=self.robot(x),
            confidence_logit=self.confidence(x).squeeze(-1),
            incident_logits=self.incident(x),
            place_logits=self.place(x),
        )
