"""ModelConfig: the flat, YAML-friendly description of one EmberVLM (the `model:` section)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class ModelConfig:
    """Architecture of EmberVLM. Every field maps 1:1 to a key of `model:` in config/train/*.yaml."""

    # vision encoder (timm RepViT)
    vision_model: str = "repvit_m0_9"
    vision_embed_dim: list[int] | None = None  # override timm's per-stage widths (tiny configs)
    vision_depth: list[int] | None = None  # override timm's per-stage depths (tiny configs)
    vision_pretrained: str | None = None  # local checkpoint path; None = random init, trained
    freeze_vision: bool = False  # honoured only when vision_pretrained is given
    image_size: int = 224
    image_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    image_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_visual_tokens: int = 8
    # decoder (GPT-2 style, transformers)
    d_model: int = 384
    n_layers: int = 6
    n_heads: int = 6
    n_positions: int = 512
    vocab_size: int = 8192
    decoder_pretrained: str | None = None  # local directory for GPT2LMHeadModel.from_pretrained
    freeze_decoder: bool = False
    tie_word_embeddings: bool = True
    # fusion
    adapter_dim: int = 48
    dropout: float = 0.1
    # reasoning module + heads
    reasoning_layers: int = 2
    reasoning_heads: int = 4
    reasoning_dim: int = 256
    reasoning_ff_dim: int = 1024
    contrastive_dim: int = 256

    def __new__(cls, *args: Any, **kwargs: Any) -> ModelConfig:
        # `ModelConfig(**yaml["model"])` names unknown keys instead of a bare TypeError.
        _check_keys(cls, kwargs)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}")
        if self.reasoning_dim % self.reasoning_heads:
            raise ValueError(
                f"model.reasoning_dim={self.reasoning_dim} is not divisible by "
                f"model.reasoning_heads={self.reasoning_heads}"
            )
        if self.num_visual_tokens < 1:
            raise ValueError("model.num_visual_tokens must be >= 1")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("model.image_mean and model.image_std need 3 values (RGB)")
        if self.image_size < 32:
            raise ValueError(f"model.image_size={self.image_size} is below RepViT's stride of 32")
        for name in ("vision_embed_dim", "vision_depth"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, [int(v) for v in value])
        self.image_mean = [float(v) for v in self.image_mean]
        self.image_std = [float(v) for v in self.image_std]

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ModelConfig:
        """Build from a `model:` mapping; unknown keys raise a ValueError that names them."""
        data = dict(data or {})
        _check_keys(cls, data)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_keys(cls: type, data: dict[str, Any]) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) in model config: {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
