"""EmberVLM: RepViT tokens + fusion + GPT-2 decoder + reasoning module + heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ember_training.model.config import ModelConfig
from ember_training.model.decoder import LanguageDecoder
from ember_training.model.fusion import Fusion
from ember_training.model.heads import TaskHeads
from ember_training.model.reasoning import ReasoningModule, masked_mean
from ember_training.model.vision import VisionEncoder


@dataclass
class EmberVLMOutput:
    """What one forward pass returns (docs/ARCHITECTURE.md)."""

    lm_logits: torch.Tensor  # [B, T, vocab]: text positions only; position t predicts token t+1
    lm_loss: torch.Tensor | None  # masked CE over labels != -100, or None without labels
    robot_logits: torch.Tensor  # [B, 5]
    confidence_logit: torch.Tensor  # [B]
    incident_logits: torch.Tensor  # [B, 43]
    place_logits: torch.Tensor  # [B, 49]
    image_embed: torch.Tensor  # [B, P] L2-normalised
    text_embed: torch.Tensor  # [B, P] L2-normalised
    reasoning_states: torch.Tensor  # [B, L, reasoning_dim]
    logit_scale: torch.Tensor  # 0-d: exp(learnable temperature), clamped at 100 (read inside forward for DDP)


@dataclass
class GenerationOutput:
    """Greedy generation result of `EmberVLM.generate` (batch of one)."""

    token_ids: list[int]
    robot_logits: torch.Tensor
    confidence_logit: torch.Tensor
    incident_logits: torch.Tensor
    place_logits: torch.Tensor


class EmberVLM(nn.Module):
    """The Ember vision-language model.

    The decoder sees `[V visual embeddings] + embed(input_ids)`, where `input_ids` holds the
    prompt followed by the target (right padded). The heads read the reasoning module's
    pooled output over the prefix only (visual + the first `prompt_lengths` tokens), so
    training and the engine's prefill see the same inputs. `labels` are aligned with
    `input_ids` (HF convention: -100 on prompt and padding; the shift happens inside).
    """

    def __init__(self, cfg: ModelConfig, decoder_hf_config: dict | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.vision = VisionEncoder(cfg)
        self.fusion = Fusion(self.vision.out_dim, cfg.d_model, cfg.adapter_dim, cfg.dropout)
        self.decoder = LanguageDecoder(cfg, decoder_hf_config)
        self.reasoning = ReasoningModule(
            cfg.d_model, cfg.reasoning_dim, cfg.reasoning_layers, cfg.reasoning_heads, cfg.reasoning_ff_dim, cfg.dropout
        )
        self.heads = TaskHeads(cfg.reasoning_dim, cfg.dropout)
        self.image_proj = nn.Linear(cfg.d_model, cfg.contrastive_dim, bias=False)
        self.text_proj = nn.Linear(cfg.d_model, cfg.contrastive_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))  # log(1/0.07), CLIP's init

    @property
    def num_visual_tokens(self) -> int:
        return self.config.num_visual_tokens

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> fused visual embeddings [B, V, d_model] (what vision.onnx computes)."""
        return self.fusion(self.vision(pixel_values))

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        prompt_lengths: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        visual_embeds: torch.Tensor | None = None,
    ) -> EmberVLMOutput:
        # visual_embeds: precomputed encode_image() output [B, V, d_model] (a frozen vision tower,
        # e.g. the robot-selection recipe); pixel_values is then ignored and may be None
        b, t = input_ids.shape
        v = self.num_visual_tokens
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones(b, t, dtype=torch.long, device=device)
        if prompt_lengths is None:  # everything given is prompt (inference)
            prompt_lengths = attention_mask.sum(1)
        prompt_lengths = prompt_lengths.to(device)
        if v + t > self.config.n_positions:
            raise ValueError(f"sequence of {v}+{t} tokens exceeds model.n_positions={self.config.n_positions}")

        visual = self.encode_image(pixel_values) if visual_embeds is None else visual_embeds
        tok = self.decoder.embed(input_ids)
        embeds = torch.cat([visual, tok.to(visual.dtype)], dim=1)
        full_mask = torch.cat([attention_mask.new_ones(b, v), attention_mask], dim=1)
        hidden, _ = self.decoder(embeds, attention_mask=full_mask)

        # heads: prefix only (visual + prompt), cut to the longest prefix of the batch
        positions = torch.arange(t, device=device)[None, :]
        prompt_mask = (positions < prompt_lengths[:, None]) & attention_mask.bool()
        prefix_mask = torch.cat([prompt_mask.new_ones(b, v), prompt_mask], dim=1)
        n_prefix = v + int(prompt_lengths.max().clamp(max=t).item()) if t else v
        pooled, layer_states = self.reasoning(hidden[:, :n_prefix], prefix_mask[:, :n_prefix])
        heads = self.heads(pooled)

        lm_logits = self.decoder.logits(hidden[:, v:])
        lm_loss = None
        if labels is not None:
            lm_loss = self.lm_loss(lm_logits, labels)

        # contrastive embeddings: image = mean fused visual token; text = mean *token embedding* of the
        # non-prompt (caption) tokens, so the text side never sees the image (else InfoNCE is trivial)
        image_embed = F.normalize(self.image_proj(visual.mean(1)), dim=-1)
        text_mask = (~prompt_mask) & attention_mask.bool()
        text_mask = torch.where(text_mask.any(1, keepdim=True), text_mask, attention_mask.bool())
        text_embed = F.normalize(self.text_proj(masked_mean(tok, text_mask)), dim=-1)

        return EmberVLMOutput(
            lm_logits=lm_logits,
            lm_loss=lm_loss,
            robot_logits=heads.robot_logits,
            confidence_logit=heads.confidence_logit,
            incident_logits=heads.incident_logits,
            place_logits=heads.place_logits,
            image_embed=image_embed,
            text_embed=text_embed,
            reasoning_states=layer_states,
            logit_scale=self.logit_scale.exp().clamp(max=100.0),
        )

    @staticmethod
    def lm_loss(lm_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token CE: logits at t predict labels at t+1; -100 is ignored (0 if nothing to predict)."""
        logits = lm_logits[:, :-1].reshape(-1, lm_logits.shape[-1]).float()
        target = labels[:, 1:].reshape(-1)
        if not bool((target != -100).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=-100)

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor,
        prompt_ids: torch.Tensor,
        max_new_tokens: int = 50,
        eos_token_id: int | None = None,
    ) -> GenerationOutput:
        """Greedy decoding with the decoder's KV cache (batch of one): the PyTorch reference."""
        if pixel_values.shape[0] != 1 or prompt_ids.shape[0] != 1:
            raise ValueError("generate() takes a batch of one")
        v = self.num_visual_tokens
        visual = self.encode_image(pixel_values)
        embeds = torch.cat([visual, self.decoder.embed(prompt_ids)], dim=1)
        hidden, cache = self.decoder(embeds, use_cache=True)
        pooled, _ = self.reasoning(hidden)
        heads = self.heads(pooled)
        budget = min(max_new_tokens, self.config.n_positions - v - prompt_ids.shape[1])
        tokens: list[int] = []
        logits = self.decoder.logits(hidden[:, -1])
        for step in range(max(budget, 0)):
            nxt = int(logits.argmax(-1).item())
            tokens.append(nxt)
            if nxt == eos_token_id or step == budget - 1:
                break
            ids = torch.tensor([[nxt]], device=prompt_ids.device)
            hidden, cache = self.decoder(self.decoder.embed(ids), past_key_values=cache, use_cache=True)
            logits = self.decoder.logits(hidden[:, -1])
        return GenerationOutput(
            tokens, heads.robot_logits, heads.confidence_logit, heads.incident_logits, heads.place_logits
        )
