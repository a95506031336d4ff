"""Runs decoder.onnx with its KV cache updated in place (onnxruntime GroupQueryAttention).

Each layer's key and value cache is one [1, H, capacity, hd] buffer allocated per analysis;
past_* inputs and present_* outputs are bound to the same buffer, so a decode step writes one
position and allocates nothing. The token, sequence-length and output buffers are bound once
and changed in place, so a step is: write the token, run, read the logits.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

HEAD_OUTPUTS = ("logits", "robot_logits", "confidence_logit", "incident_logits", "place_logits")


def _ov(array: np.ndarray) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(array)  # CPU: wraps the numpy memory, no copy


class KVCacheDecoder:
    """One generation at a time: `start(prompt_ids, visual, capacity)` then `step(token)`."""

    def __init__(self, session: ort.InferenceSession, n_layers: int, n_heads: int, head_dim: int, d_model: int):
        self.session = session
        self.n_layers, self.n_heads, self.head_dim = n_layers, n_heads, head_dim
        shapes = {o.name: o.shape for o in session.get_outputs()}
        vocab = shapes["logits"][-1]
        self._outputs = {
            "logits": np.zeros((1, vocab), np.float32),
            "robot_logits": np.zeros((1, shapes["robot_logits"][-1]), np.float32),
            "confidence_logit": np.zeros((1,), np.float32),
            "incident_logits": np.zeros((1, shapes["incident_logits"][-1]), np.float32),
            "place_logits": np.zeros((1, shapes["place_logits"][-1]), np.float32),
        }
        self._no_visual = np.zeros((1, 0, d_model), np.float32)
        self._token = np.zeros((1, 1), np.int64)
        self._seqlens = np.zeros((1,), np.int32)
        self._total = np.zeros((), np.int32)
        self._cache: list[np.ndarray] = []
        self._binding: ort.IOBinding | None = None
        self.length = 0
        self.capacity = 0

    def start(self, prompt_ids: list[int], visual: np.ndarray, capacity: int) -> dict[str, np.ndarray]:
        """Prefill the visual embeddings and prompt; returns copies of the logits and head outputs."""
        n = visual.shape[1] + len(prompt_ids)
        if n > capacity:
            raise ValueError(f"prefill of {n} positions exceeds the cache capacity {capacity}")
        self.capacity = capacity
        self._cache = [
            np.zeros((1, self.n_heads, capacity, self.head_dim), np.float32) for _ in range(2 * self.n_layers)
        ]
        b = self.session.io_binding()
        for name, buf in self._outputs.items():
            b.bind_ortvalue_output(name, _ov(buf))
        for i in range(self.n_layers):
            for j, kind in enumerate(("key", "value")):
                cache = _ov(self._cache[2 * i + j])
                b.bind_ortvalue_input(f"past_{kind}_{i}", cache)
                b.bind_ortvalue_output(f"present_{kind}_{i}", cache)
        ids = np.asarray([prompt_ids], dtype=np.int64)
        visual = np.ascontiguousarray(visual, dtype=np.float32)
        b.bind_ortvalue_input("input_ids", _ov(ids))
        b.bind_ortvalue_input("visual_embeds", _ov(visual))
        self._total[...] = n
        self._seqlens[0] = n - 1
        b.bind_ortvalue_input("seqlens_k", _ov(self._seqlens))
        b.bind_ortvalue_input("total_sequence_length", _ov(self._total))
        self.session.run_with_iobinding(b)
        result = {name: buf.copy() for name, buf in self._outputs.items()}
        # from now on: one token, no visual rows; these buffers are changed in place per step
        b.bind_ortvalue_input("input_ids", _ov(self._token))
        b.bind_ortvalue_input("visual_embeds", _ov(self._no_visual))
        self._binding = b
        self.length = n
        return result

    def step(self, token: int) -> np.ndarray:
        """Append one token; returns the next-token logits [vocab] (valid until the next step)."""
        if self._binding is None:
            raise RuntimeError("start() first")
        if self.length >= self.capacity:
            raise ValueError(f"KV cache full ({self.capacity} positions)")
        self._token[0, 0] = token
        self.length += 1
        self._total[...] = self.length
        self._seqlens[0] = self.length - 1
        self.session.run_with_iobinding(self._binding)
        return self._outputs["logits"][0]

    def release(self) -> None:
        """Drop the KV cache and binding (between analyses)."""
        self._binding = None
        self._cache = []
        self.length = self.capacity = 0
