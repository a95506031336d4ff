"""Export-friendly views of a trained EmberVLM: the graphs of vision.onnx and decoder.onnx.

The decoder wrapper re-states GPT-2's attention with explicit past/present key-value
tensors (one graph for prefill and decode steps) and reuses every weight of the trained
modules; the tied embedding is one [D, vocab] tensor read by both the token lookup
(Gather on axis 1) and the LM head (MatMul), so it is stored once.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ember_training.model import EmberVLM


class VisionExport(nn.Module):
    """pixel_values [B, 3, H, W] -> visual_embeds [B, V, d_model]: reparameterized RepViT, pooling, fusion."""

    def __init__(self, model: EmberVLM) -> None:
        super().__init__()
        vision = copy.deepcopy(model.vision).eval()
        vision.reparameterize()
        self.backbone = vision.backbone
        size = model.config.image_size
        with torch.no_grad():
            _, _, h, w = self.backbone.forward_features(torch.zeros(1, 3, size, size)).shape
        self.register_buffer("pool", vision.pool_matrix(int(h), int(w), torch.device("cpu"), torch.float32))
        self.fusion = copy.deepcopy(model.fusion).eval()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(pixel_values)
        b, c = feats.shape[0], feats.shape[1]
        tokens = torch.matmul(self.pool, feats.reshape(b, c, -1).transpose(1, 2))
        return self.fusion(tokens)


class DecoderExport(nn.Module):
    """(input_ids, visual_embeds, past k/v per layer) -> (logits of the last position, heads, present k/v).

    Positions continue from the past length; visual_embeds has V=8 rows on the prefill call
    and 0 rows on decode steps. The heads pool over every position of the call, which on
    the prefill call is exactly the prefix (visual + prompt), as in training.
    """

    def __init__(self, model: EmberVLM) -> None:
        super().__init__()
        lm = model.decoder.lm
        c = lm.config
        if c.activation_function not in ("gelu_new", "gelu", "gelu_pytorch_tanh", "relu", "gelu_fast"):
            raise ValueError(f"unsupported decoder activation {c.activation_function!r}")
        if c.reorder_and_upcast_attn:
            raise ValueError("reorder_and_upcast_attn decoders are not supported by the exporter")
        self.blocks = copy.deepcopy(lm.transformer.h).eval()
        self.ln_f = copy.deepcopy(lm.transformer.ln_f)
        self.wpe = nn.Parameter(lm.transformer.wpe.weight.detach().clone())
        self.wte_t = nn.Parameter(lm.transformer.wte.weight.detach().t().contiguous())  # [D, vocab]
        head_w = lm.lm_head.weight.detach()
        self.tied = head_w.data_ptr() == lm.transformer.wte.weight.data_ptr()
        self.head_t = None if self.tied else nn.Parameter(head_w.t().contiguous())
        self.reasoning = copy.deepcopy(model.reasoning).eval()
        self.heads = copy.deepcopy(model.heads).eval()
        self.n_heads = c.n_head
        self.head_dim = c.n_embd // c.n_head
        self.scales = []
        for i in range(c.n_layer):
            s = self.head_dim**-0.5 if c.scale_attn_weights else 1.0
            if c.scale_attn_by_inverse_layer_idx:
                s /= float(i + 1)
            self.scales.append(s)

    def _attn(self, block: nn.Module, x: torch.Tensor, past_k, past_v, bias, scale: float):
        b, s, d = x.shape
        q, k, v = block.attn.c_attn(x).split(d, dim=2)
        q = q.reshape(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = torch.cat([past_k, k.reshape(b, s, self.n_heads, self.head_dim).transpose(1, 2)], dim=2)
        v = torch.cat([past_v, v.reshape(b, s, self.n_heads, self.head_dim).transpose(1, 2)], dim=2)
        w = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale + bias, dim=-1)
        out = torch.matmul(w, v).transpose(1, 2).reshape(b, s, d)
        return block.attn.c_proj(out), k, v

    def forward(self, input_ids: torch.Tensor, visual_embeds: torch.Tensor, *past: torch.Tensor):
        tok = self.wte_t[:, input_ids].permute(1, 2, 0)  # [B, T, D] via Gather(axis=1) on the shared table
        x = torch.cat([visual_embeds, tok], dim=1)
        s = x.shape[1]
        p = past[0].shape[2]
        q_pos = torch.arange(s, device=x.device) + p
        x = x + self.wpe[q_pos].unsqueeze(0)
        k_pos = torch.arange(p + s, device=x.device)
        bias = torch.where(k_pos[None, :] <= q_pos[:, None], 0.0, torch.finfo(x.dtype).min)
        presents = []
        for i, block in enumerate(self.blocks):
            a, k, v = self._attn(block, block.ln_1(x), past[2 * i], past[2 * i + 1], bias, self.scales[i])
            x = x + a
            x = x + block.mlp(block.ln_2(x))
            presents += [k, v]
        h = self.ln_f(x)
        logits = torch.matmul(h[:, -1], self.wte_t if self.head_t is None else self.head_t)
        pooled, _ = self.reasoning(h)
        heads = self.heads(pooled)
        return (
            logits,
            heads.robot_logits,
            heads.confidence_logit,
            heads.incident_logits,
            heads.place_logits,
            *presents,
        )


def decoder_io_names(n_layers: int) -> tuple[list[str], list[str]]:
    """ONNX input and output names of decoder.onnx."""
    past = [f"past_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    present = [f"present_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
    inputs = ["input_ids", "visual_embeds", *past]
    outputs = ["logits", "robot_logits", "confidence_logit", "incident_logits", "place_logits", *present]
    return inputs, outputs
