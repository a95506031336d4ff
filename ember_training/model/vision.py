"""Vision encoder: timm RepViT features adaptively pooled to a few visual tokens."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from ember_training.model.config import ModelConfig

log = logging.getLogger(__name__)


def _adaptive_pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """[size_out, size_in] averaging matrix with the exact bins of nn.AdaptiveAvgPool1d."""
    mat = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)  # ceil
        mat[i, start:end] = 1.0 / (end - start)
    return mat


def token_grid(num_tokens: int) -> tuple[int, int]:
    """Rows x cols of the pooled token grid: the most square factorisation, cols >= rows (8 -> 2x4)."""
    rows = int(num_tokens**0.5)
    while num_tokens % rows:
        rows -= 1
    return rows, num_tokens // rows


class VisionEncoder(nn.Module):
    """RepViT backbone (timm, no classifier) -> [B, V, C] tokens by adaptive average pooling.

    Pooling is a fixed matrix product so it exports to ONNX for any feature-map size.
    Pretrained weights load only from a local checkpoint path; without one the encoder
    is randomly initialised and always trainable.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        kwargs: dict = {}
        if cfg.vision_embed_dim is not None:
            kwargs["embed_dim"] = tuple(cfg.vision_embed_dim)
        if cfg.vision_depth is not None:
            kwargs["depth"] = tuple(cfg.vision_depth)
        self.backbone = timm.create_model(cfg.vision_model, pretrained=False, num_classes=0, **kwargs)
        self.out_dim: int = int(self.backbone.num_features)
        self.num_tokens = cfg.num_visual_tokens
        self.grid = token_grid(cfg.num_visual_tokens)
        self.pretrained = False
        if cfg.vision_pretrained:
            self.load_checkpoint(cfg.vision_pretrained)
        self.frozen = bool(cfg.freeze_vision and self.pretrained)
        if cfg.freeze_vision and not self.pretrained:
            log.warning("freeze_vision ignored: no pretrained vision checkpoint, the encoder is trained")
        if self.frozen:
            self.backbone.requires_grad_(False)
        self._pool_cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def load_checkpoint(self, path: str | Path) -> None:
        """Load timm RepViT weights from a local file (state dict, optionally under 'state_dict'/'model')."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vision_pretrained checkpoint not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist.", "fc."))}
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{path}: {len(missing)} vision weights missing, e.g. {missing[:3]}")
        if unexpected:
            log.warning("%s: ignored %d unexpected keys, e.g. %s", path, len(unexpected), unexpected[:3])
        self.pretrained = True

    def pool_matrix(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """[V, h*w] matrix equal to AdaptiveAvgPool2d(grid) followed by flattening."""
        key = (h, w, f"{device}/{dtype}")
        if key not in self._pool_cache:
            rows, cols = self.grid
            mat = torch.kron(_adaptive_pool_matrix(h, rows), _adaptive_pool_matrix(w, cols))
            self._pool_cache[key] = mat.to(device=device, dtype=dtype)
        return self._pool_cache[key]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised images -> [B, V, C] visual tokens."""
        feats = self.backbone.forward_features(pixel_values)  # [B, C, h, w]
        b, c, h, w = feats.shape
        pool = self.pool_matrix(int(h), int(w), feats.device, feats.dtype)
        return torch.matmul(pool, feats.reshape(b, c, h * w).transpose(1, 2))

    def reparameterize(self) -> None:
        """Fold BatchNorms and RepVGG branches in place (inference only; export calls this)."""
        from timm.utils.model import reparameterize_model

        self.backbone = reparameterize_model(self.backbone.eval(), inplace=True)
