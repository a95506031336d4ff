"""Write vision.onnx and decoder.onnx (FP32) from a trained EmberVLM."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from ember_training.export.wrappers import DecoderExport, VisionExport, decoder_io_names
from ember_training.model import EmberVLM

log = logging.getLogger(__name__)
OPSET = 17


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
    b, t, v, p = 1, 3, cfg.num_visual_tokens, 2
    ids = torch.randint(0, cfg.vocab_size, (b, t))
    vis = torch.randn(b, v, cfg.d_model)
    past = [torch.randn(b, wrapper.n_heads, p, wrapper.head_dim) for _ in range(2 * n_layers)]
    axes = {"input_ids": {1: "tokens"}, "visual_embeds": {1: "visual"}}
    for name in inputs[2:]:
        axes[name] = {2: "past"}
    for name in outputs[5:]:
        axes[name] = {2: "total"}
    _export(wrapper, (ids, vis, *past), path, inputs, outputs, axes)
    return path
