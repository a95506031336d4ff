"""GPT-2 style language decoder (transformers GPT2LMHeadModel)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from ember_training.model.config import ModelConfig

log = logging.getLogger(__name__)


def gpt2_config(cfg: ModelConfig) -> GPT2Config:
    """The transformers config for a from-scratch decoder of this ModelConfig."""
    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


class LanguageDecoder(nn.Module):
    """GPT2LMHeadModel built from the config, or `from_pretrained` of a local directory.

    With a pretrained LM the ModelConfig's d_model / n_layers / n_heads / vocab_size must
    match it (a ValueError says which one does not); the vocabulary is resized upward
    when the tokenizer added special tokens.
    """

    def __init__(self, cfg: ModelConfig, hf_config: dict | None = None) -> None:
        super().__init__()
        if hf_config is not None:  # rebuilding a saved model: architecture from its own config, no files
            self.lm = GPT2LMHeadModel(GPT2Config.from_dict(hf_config))
            self.pretrained = False
        elif cfg.decoder_pretrained:
            path = Path(cfg.decoder_pretrained)
            if not path.is_dir():
                raise FileNotFoundError(f"decoder_pretrained directory not found: {path}")
            self.lm = GPT2LMHeadModel.from_pretrained(str(path))
            c = self.lm.config
            for ours, theirs in (("d_model", "n_embd"), ("n_layers", "n_layer"), ("n_heads", "n_head")):
                if getattr(cfg, ours) != getattr(c, theirs):
                    raise ValueError(
                        f"model.{ours}={getattr(cfg, ours)} but the pretrained LM at {path} has {getattr(c, theirs)}"
                    )
            if cfg.n_positions > c.n_positions:
                raise ValueError(f"model.n_positions={cfg.n_positions} exceeds the pretrained LM's {c.n_positions}")
            if cfg.vocab_size < c.vocab_size:
                raise ValueError(f"model.vocab_size={cfg.vocab_size} is below the pretrained LM's {c.vocab_size}")
            if cfg.vocab_size > c.vocab_size:
                self.lm.resize_token_embeddings(cfg.vocab_size)
            self.pretrained = True
        else:
            self.lm = GPT2LMHeadModel(gpt2_config(cfg))
            self.pretrained = False
        self.frozen = bool(cfg.freeze_decoder and self.pretrained)
        if cfg.freeze_decoder and not self.pretrained:
            log.warning("freeze_decoder ignored: no pretrained LM, the decoder is trained")
        if self.frozen:
            self.lm.requires_grad_(False)

    @property
    def wte(self) -> nn.Embedding:
        return self.lm.transformer.wte

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (no positions: GPT-2 adds them inside)."""
        return self.lm.transformer.wte(input_ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
    ):
        """Run the transformer on embeddings; returns (last hidden states after ln_f, cache or None)."""
        out = self.lm.transformer(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )
        return out.last_hidden_state, (out.past_key_values if use_cache else None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.lm_head(hidden)
