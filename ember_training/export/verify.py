"""Export self-checks: ONNX FP32 against PyTorch, INT8 against ONNX FP32.

Both run greedy decoding traces with the KV cache: the reference picks the tokens and the
other side is teacher-forced on them, so every position compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import torch

from ember_training.model import EmberVLM

HEAD_NAMES = ("robot_logits", "confidence_logit", "incident_logits", "place_logits")


@dataclass
class Trace:
    """One greedy (or teacher-forced) run: visual embeddings, heads and next-token logits per step."""

    visual: np.ndarray
    heads: dict[str, np.ndarray]
    logits: list[np.ndarray] = field(default_factory=list)  # step i: logits predicting token i

    @property
    def tokens(self) -> list[int]:
        return [int(np.argmax(x)) for x in self.logits]


@torch.no_grad()
def torch_trace(model: EmberVLM, pixels: np.ndarray, prompt_ids: list[int], steps: int) -> Trace:
    """PyTorch reference: the trained model's own forward path with the transformers KV cache."""
    model.eval()
    px = torch.from_numpy(pixels)
    visual = model.encode_image(px)
    ids = torch.tensor([prompt_ids])
    embeds = torch.cat([visual, model.decoder.embed(ids)], dim=1)
    hidden, cache = model.decoder(embeds, use_cache=True)
    pooled, _ = model.reasoning(hidden)
    h = model.heads(pooled)
    heads = {name: getattr(h, name).numpy() for name in HEAD_NAMES}
    trace = Trace(visual.numpy(), heads, [model.decoder.logits(hidden[:, -1])[0].numpy()])
    for _ in range(steps):
        nxt = torch.tensor([[int(trace.logits[-1].argmax())]])
        hidden, cache = model.decoder(model.decoder.embed(nxt), past_key_values=cache, use_cache=True)
        trace.logits.append(model.decoder.logits(hidden[:, -1])[0].numpy())
    return trace


class OnnxPair:
    """vision.onnx + decoder.onnx sessions (engine options), run through the engine's KV decoder."""

    def __init__(self, vision_path: str, decoder_path: str, n_layers: int, n_heads: int, head_dim: int) -> None:
        from ember.engine.decoder import KVCacheDecoder
        from ember.engine.engine import session_options

        opts = session_options(threads=1)
        self.vision = ort.InferenceSession(vision_path, opts, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(decoder_path, opts, providers=["CPUExecutionProvider"])
        d_model = self.vision.get_outputs()[0].shape[-1]
        self.kv = KVCacheDecoder(self.decoder, n_layers, n_heads, head_dim, d_model)

    def trace(self, pixels: np.ndarray, prompt_ids: list[int], steps: int, forced: list[int] | None = None) -> Trace:
        """Greedy run (or teacher-forced on `forced` tokens)."""
        visual = self.vision.run(None, {"pixel_values": pixels})[0]
        out = self.kv.start(prompt_ids, visual, visual.shape[1] + len(prompt_ids) + steps)
        trace = Trace(visual, {k: out[k] for k in HEAD_NAMES}, [out["logits"][0]])
        for step in range(steps):
            nxt = forced[step] if forced is not None else int(np.argmax(trace.logits[-1]))
            trace.logits.append(self.kv.step(nxt).copy())
        self.kv.release()
        return trace


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def compare_fp32(ref: list[Trace], onnx_traces: list[Trace]) -> dict[str, float]:
    """Max abs differences ONNX FP32 vs PyTorch (logits, heads, visual embeddings)."""
    logit = max(
        float(np.abs(a - b).max())
        for r, o in zip(ref, onnx_traces, strict=True)
        for a, b in zip(r.logits, o.logits, strict=True)
    )
    head = max(
        float(np.abs(r.heads[k] - o.heads[k]).max())
        for r, o in zip(ref, onnx_traces, strict=True)
        for k in HEAD_NAMES
    )
    visual = max(float(np.abs(r.visual - o.visual).max()) for r, o in zip(ref, onnx_traces, strict=True))
    return {
        "fp32_max_abs_logit_diff": logit,
        "fp32_max_abs_head_diff": head,
        "fp32_max_abs_visual_diff": visual,
    }


def selected_robots(robot_logits: np.ndarray, thresholds: list[float]) -> frozenset[int]:
    """The robot types the engine's decoder head selects (EmberEngine.select_robots): every type
    whose score reaches its threshold, else the best one."""
    scores = _sigmoid(np.asarray(robot_logits, np.float64).reshape(-1))
    chosen = frozenset(int(i) for i in np.flatnonzero(scores >= np.asarray(thresholds)))
    return chosen or frozenset([int(np.argmax(scores))])


def _matching_prefix(a: list[int], b: list[int]) -> float:
    """Share of `a` generated before `b` first differs from it."""
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
    return n / len(a)


def compare_int8(
    fp32: list[Trace], int8: list[Trace], int8_free: list[Trace], robot_thresholds: list[float]
) -> dict[str, float]:
    """INT8 vs FP32 ONNX on the same inputs: `fp32` greedy runs, `int8` teacher-forced on their
    tokens, `int8_free` greedy runs of their own. Next-token agreement (forced), identical greedy
    generations (free), robot selection with the bundle's thresholds, top incident label, score
    drift (sigmoid scale) and visual-embedding cosine."""
    pairs = list(zip(fp32, int8, int8_free, strict=True))
    agree = [
        int(np.argmax(a) == np.argmax(b))
        for f, q, _ in pairs
        for a, b in zip(f.logits, q.logits, strict=True)
    ]
    cos = []
    for f, q, _ in pairs:
        a, b = f.visual.reshape(-1), q.visual.reshape(-1)
        cos.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return {
        "int8_top1_agreement": float(np.mean(agree)),
        "int8_positions_compared": len(agree),
        "int8_generation_agreement": float(np.mean([f.tokens == g.tokens for f, _, g in pairs])),
        "int8_generation_matching_prefix": float(np.mean([_matching_prefix(f.tokens, g.tokens) for f, _, g in pairs])),
        "int8_robot_selection_agreement": float(np.mean([
            selected_robots(f.heads["robot_logits"], robot_thresholds)
            == selected_robots(q.heads["robot_logits"], robot_thresholds)
            for f, q, _ in pairs
        ])),
        "int8_incident_top1_agreement": float(np.mean([
            int(np.argmax(f.heads["incident_logits"])) == int(np.argmax(q.heads["incident_logits"])) for f, q, _ in pairs
        ])),
        "int8_robot_score_max_drift": max(
            float(np.abs(_sigmoid(f.heads["robot_logits"]) - _sigmoid(q.heads["robot_logits"])).max()) for f, q, _ in pairs
        ),
        "int8_incident_score_max_drift": max(
            float(np.abs(_sigmoid(f.heads["incident_logits"]) - _sigmoid(q.heads["incident_logits"])).max())
            for f, q, _ in pairs
        ),
        "int8_visual_min_cosine": min(cos),
    }
