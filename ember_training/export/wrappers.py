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


class _Features(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


@torch.no_grad()
def _feature_size(backbone: nn.Module, size: int) -> tuple[int, int]:
    """(h, w) of the backbone's feature map for size x size images, from a forward on the meta
    device: shapes only (a real forward of the robots' model took ~1 s of the export)."""
    features = _Features(backbone)
    meta = {k: t.to("meta") for k, t in (*features.named_parameters(), *features.named_buffers())}
    x = torch.zeros(1, 3, size, size, device="meta")
    _, _, h, w = torch.func.functional_call(features, meta, (x,)).shape
    return int(h), int(w)


class VisionExport(nn.Module):
    """pixel_values [B, 3, H, W] -> visual_embeds [B, V, d_model]: reparameterized RepViT, pooling, fusion."""

    def __init__(self, model: EmberVLM) -> None:
        super().__init__()
        vision = copy.deepcopy(model.vision).eval()
        vision.reparameterize()
        self.backbone = vision.backbone
        h, w = _feature_size(self.backbone, model.config.image_size)
        self.register_buffer("pool", vision.pool_matrix(int(h), int(w), torch.device("cpu"), torch.float32))
        self.fusion = copy.deepcopy(model.fusion).eval()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(pixel_values)
        b, c = feats.shape[0], feats.shape[1]
        tokens = torch.matmul(self.pool, feats.reshape(b, c, -1).transpose(1, 2))
        return self.fusion(tokens)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight (+ bias) with weight [in, out]: one MatMul (+ Add) in ONNX, quantizable."""
    y = torch.matmul(x, weight)
    return y if bias is None else y + bias


class _Lin(nn.Module):
    """A frozen [in, out] weight and bias copied from nn.Linear or transformers' Conv1D."""

    def __init__(self, module: nn.Module, scale_cols: tuple[int, int, float] | None = None) -> None:
        super().__init__()
        w = module.weight.detach()
        w = w.t() if isinstance(module, nn.Linear) else w  # Conv1D stores [in, out]
        w = w.clone().contiguous()
        b = module.bias.detach().clone() if module.bias is not None else None
        if scale_cols is not None:  # fold the attention scale into the query columns
            lo, hi, scale = scale_cols
            w[:, lo:hi] *= scale
            if b is not None:
                b[lo:hi] *= scale
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b) if b is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(x, self.weight, self.bias)


class _CachedAttention(torch.autograd.Function):
    """Causal multi-head attention over an in-place KV cache, exported as one onnxruntime
    `com.microsoft.GroupQueryAttention` node (kv_num_heads = num_heads; via a placeholder
    that `export_decoder` rewrites).

    q, k, v: [1, S, D] for the new positions; cache_k/cache_v: [1, H, C, hd] buffers of
    capacity C whose first `total - S` positions hold the past. Returns (out [1, S, D],
    cache_k, cache_v) with the new keys/values written at positions total-S .. total-1;
    the engine binds each present output to its past buffer, so the update is in place.
    """

    @staticmethod
    def forward(ctx, q, k, v, cache_k, cache_v, seqlens_k, total, num_heads: int, scale: float):  # noqa: ARG004
        s, d = q.shape[1], q.shape[2]
        hd = d // num_heads
        t = int(total)
        p = t - s

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(1, -1, num_heads, hd).transpose(1, 2)

        cache_k, cache_v = cache_k.clone(), cache_v.clone()
        cache_k[:, :, p:t] = heads(k)
        cache_v[:, :, p:t] = heads(v)
        causal = torch.arange(t)[None, :] <= (p + torch.arange(s))[:, None]
        att = torch.matmul(heads(q), cache_k[:, :, :t].transpose(-1, -2)) * scale
        att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        out = torch.matmul(att, cache_v[:, :, :t]).transpose(1, 2).reshape(1, s, d)
        return out, cache_k, cache_v

    @staticmethod
    def symbolic(g, q, k, v, cache_k, cache_v, seqlens_k, total, num_heads, scale):
        out, pk, pv = g.op(
            PLACEHOLDER_ATTENTION,
            q,
            k,
            v,
            cache_k,
            cache_v,
            seqlens_k,
            total,
            num_heads_i=num_heads,
            scale_f=scale,
            outputs=3,
        )
        out.setType(q.type())
        pk.setType(cache_k.type())
        pv.setType(cache_v.type())
        return out, pk, pv


PLACEHOLDER_ATTENTION = "ember::CachedCausalAttention"


class _DecoderLayer(nn.Module):
    """One GPT-2 block: q/k/v projection, fused causal attention with the KV cache, MLP."""

    def __init__(self, block: nn.Module, n_heads: int, scale: float, activation: nn.Module) -> None:
        super().__init__()
        d = block.ln_1.weight.shape[0]
        self.d, self.h, self.scale = d, n_heads, scale
        self.ln_1, self.ln_2 = copy.deepcopy(block.ln_1), copy.deepcopy(block.ln_2)
        self.c_attn = _Lin(block.attn.c_attn)
        self.c_proj = _Lin(block.attn.c_proj)
        self.c_fc = _Lin(block.mlp.c_fc)
        self.mlp_proj = _Lin(block.mlp.c_proj)
        self.act = copy.deepcopy(activation)

    def forward(self, x, cache_k, cache_v, seqlens_k, total):
        q, k, v = self.c_attn(self.ln_1(x)).split(self.d, dim=2)
        a, k, v = _CachedAttention.apply(q, k, v, cache_k, cache_v, seqlens_k, total, self.h, self.scale)
        x = x + self.c_proj(a)
        x = x + self.mlp_proj(self.act(self.c_fc(self.ln_2(x))))
        return x, k, v


class _ReasoningLayer(nn.Module):
    """The reasoning block (pre-norm, bidirectional, no padding) with constant reshape shapes."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        d = block.norm1.weight.shape[0]
        self.d, self.h = d, block.heads
        self.hd = d // block.heads
        self.norm1, self.norm2 = copy.deepcopy(block.norm1), copy.deepcopy(block.norm2)
        self.qkv = _Lin(block.qkv, (0, d, self.hd**-0.5))
        self.out = _Lin(block.out)
        self.ff1, self.ff2 = _Lin(block.ff[0]), _Lin(block.ff[3])
        self.act = copy.deepcopy(block.ff[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(self.norm1(x)).reshape(1, -1, 3 * self.h, self.hd).transpose(1, 2)
        q, k, v = qkv.split(self.h, dim=1)
        a = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)), dim=-1), v)
        x = x + self.out(a.transpose(1, 2).reshape(1, -1, self.d))
        return x + self.ff2(self.act(self.ff1(self.norm2(x))))


class DecoderExport(nn.Module):
    """(input_ids, visual_embeds, seqlens_k, total_sequence_length, KV cache per layer)
    -> (logits of the last position, heads, updated KV cache).

    Batch size 1 (the engine's). The KV cache of each layer is a [1, H, capacity, hd]
    buffer (GroupQueryAttention's shared past/present buffer): `total_sequence_length` is
    the number of valid positions after this call and `seqlens_k` = [total - 1]; the new
    tokens take positions total-S .. total-1. visual_embeds has V rows on the prefill call
    and 0 rows on decode steps. The reasoning module and heads
    read every position of a call that has visual rows (the prefill: exactly the prefix,
    visual + prompt, as in training); on decode steps they run over zero positions, so a
    step costs only the decoder (their outputs are then meaningless and unused).
    """

    def __init__(self, model: EmberVLM) -> None:
        super().__init__()
        lm = model.decoder.lm
        c = lm.config
        if c.reorder_and_upcast_attn:
            raise ValueError("reorder_and_upcast_attn decoders are not supported by the exporter")
        self.n_heads = c.n_head
        self.head_dim = c.n_embd // c.n_head
        layers = []
        for i, block in enumerate(lm.transformer.h):
            scale = self.head_dim**-0.5 if c.scale_attn_weights else 1.0
            if c.scale_attn_by_inverse_layer_idx:
                scale /= float(i + 1)
            layers.append(_DecoderLayer(block, c.n_head, scale, block.mlp.act))
        self.layers = nn.ModuleList(layers)
        self.ln_f = copy.deepcopy(lm.transformer.ln_f)
        self.wpe = nn.Parameter(lm.transformer.wpe.weight.detach().clone())
        self.wte_t = nn.Parameter(lm.transformer.wte.weight.detach().t().contiguous())  # [D, vocab]
        head_w = lm.lm_head.weight.detach()
        tied = head_w.data_ptr() == lm.transformer.wte.weight.data_ptr()
        self.head_t = None if tied else nn.Parameter(head_w.t().contiguous())
        r = model.reasoning
        self.r_proj = _Lin(r.proj)
        self.r_layers = nn.ModuleList(_ReasoningLayer(b) for b in r.blocks)
        self.r_norm = copy.deepcopy(r.norm)
        self.heads = copy.deepcopy(model.heads).eval()

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_embeds: torch.Tensor,
        seqlens_k: torch.Tensor,
        total_sequence_length: torch.Tensor,
        *past: torch.Tensor,
    ):
        tok = self.wte_t[:, input_ids].permute(1, 2, 0)  # [1, T, D]: Gather(axis=1) on the shared table
        x = torch.cat([visual_embeds, tok], dim=1)
        s = torch._shape_as_tensor(x)[1]
        p = total_sequence_length.to(torch.int64) - s  # positions already in the cache
        x = x + self.wpe[torch.arange(s) + p].unsqueeze(0)
        presents = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, past[2 * i], past[2 * i + 1], seqlens_k, total_sequence_length)
            presents += [k, v]
        h = self.ln_f(x)
        logits = torch.matmul(h[:, -1], self.wte_t if self.head_t is None else self.head_t)
        # reasoning + heads over the call's positions if it has visual rows (prefill), else over none
        has_visual = torch.clamp(torch._shape_as_tensor(visual_embeds)[1], max=1)
        n = s * has_visual
        r = self.r_proj(torch.index_select(h, 1, torch.arange(n)))
        for layer in self.r_layers:
            r = layer(r)
        pooled = self.r_norm(r.sum(1) / torch.clamp(n, min=1).to(r.dtype))
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
    inputs = ["input_ids", "visual_embeds", "seqlens_k", "total_sequence_length", *past]
    outputs = ["logits", "robot_logits", "confidence_logit", "incident_logits", "place_logits", *present]
    return inputs, outputs
