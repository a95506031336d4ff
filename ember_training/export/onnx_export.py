"""Write vision.onnx and decoder.onnx (FP32) from a trained EmberVLM."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from ember_training.export.wrappers import (
    PLACEHOLDER_ATTENTION,
    DecoderExport,
    VisionExport,
    decoder_io_names,
)
from ember_training.model import EmberVLM

log = logging.getLogger(__name__)
OPSET = 20  # Gelu is one op from opset 20: fewer nodes, less memory on the robot


def _rewrite_attention(path: Path) -> None:
    """Turn the exporter's placeholder attention nodes into com.microsoft.GroupQueryAttention."""
    model = onnx.load(str(path))
    domain, op = PLACEHOLDER_ATTENTION.split("::")
    found = 0
    for node in model.graph.node:
        if node.domain == domain and node.op_type == op:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            del node.attribute[:]  # inputs keep their order: q, k, v, past_key, past_value, seqlens_k, total
            node.attribute.extend(
                [
                    onnx.helper.make_attribute("num_heads", int(attrs["num_heads"])),
                    onnx.helper.make_attribute("kv_num_heads", int(attrs["num_heads"])),
                    onnx.helper.make_attribute("scale", float(attrs["scale"])),
                ]
            )
            node.op_type, node.domain = "GroupQueryAttention", "com.microsoft"
            found += 1
    opsets = [o for o in model.opset_import if o.domain not in (domain, "com.microsoft")]
    del model.opset_import[:]
    model.opset_import.extend([*opsets, onnx.helper.make_opsetid("com.microsoft", 1)])
    if not found:
        raise RuntimeError("decoder export produced no attention node to rewrite")
    onnx.save(model, str(path))


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs, outputs, dynamic_axes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    if any(n.domain == PLACEHOLDER_ATTENTION.split("::")[0] for n in onnx.load(str(path)).graph.node):
        _rewrite_attention(path)
    onnx.checker.check_model(str(path))


@torch.no_grad()
def export_vision(model: EmberVLM, path: str | Path) -> Path:
    """vision.onnx: pixel_values [B,3,H,W] (normalised) -> visual_embeds [B,V,d_model]."""
    path = Path(path)
    size = model.config.image_size
    wrapper = VisionExport(model).eval()
    dummy = torch.randn(1, 3, size, size)
    _export(
        wrapper,
        (dummy,),
        path,
        ["pixel_values"],
        ["visual_embeds"],
        {"pixel_values": {0: "batch"}, "visual_embeds": {0: "batch"}},
    )
    return path


@torch.no_grad()
def export_decoder(model: EmberVLM, path: str | Path) -> Path:
    """decoder.onnx (batch 1): one graph for the prefill call (V visual rows, empty past) and decode steps (V=0)."""
    path = Path(path)
    cfg = model.config
    wrapper = DecoderExport(model).eval()
    n_layers = len(wrapper.layers)
    inputs, outputs = decoder_io_names(n_layers)
    # batch 1 (the engine's); other sizes non-degenerate so no dimension is specialised to 0 or 1
    b, t, v, p, capacity = 1, 3, cfg.num_visual_tokens, 2, 16
    ids = torch.randint(0, cfg.vocab_size, (b, t))
    vis = torch.randn(b, v, cfg.d_model)
    total = torch.tensor(p + v + t, dtype=torch.int32)
    seqlens = (total - 1).reshape(1)
    cache = [torch.randn(b, wrapper.n_heads, capacity, wrapper.head_dim) for _ in range(2 * n_layers)]
    axes = {"input_ids": {1: "tokens"}, "visual_embeds": {1: "visual"}}
    for name in inputs[4:] + outputs[5:]:
        axes[name] = {2: "capacity"}
    _export(wrapper, (ids, vis, seqlens, total, *cache), path, inputs, outputs, axes)
    return path
