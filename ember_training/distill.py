"""Teacher logits for stage-2 distillation: the file format, its writer, reader and the KL loss.

File format (`.npz`, numpy, no pickle), version 1:

    meta         0-d str array, JSON: {"format": "ember-teacher-logits", "version": 1, "k": K,
                 "vocab_size": V, "tokenizer_sha256": sha256 of the tokenizer.json text}
    uids         str [N]        sample ids of the loaders ("llava/<id>#<turn>", "vqa/<question_id>")
    offsets      int64 [N+1]    rows offsets[i]:offsets[i+1] belong to uids[i]
    token_ids    int32 [P]      the target token each row predicts (alignment check)
    topk_ids     int32 [P, K]   the teacher's K most likely token ids at that target position
    topk_logits  float16 [P, K] their logits (raw, before temperature)

Row j of a sample is the teacher's distribution for its j-th target token (EOS included),
given the image, the prompt and the target tokens before it. The teacher must use the
student's tokenizer (checked by hash). A sample whose target tokens differ from `token_ids`
(other truncation) is not distilled, and is counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

FORMAT = "ember-teacher-logits"
VERSION = 1


class TeacherLogitsError(ValueError):
    """A teacher file that does not fit this format or this tokenizer."""


def tokenizer_sha256(tok: Tokenizer) -> str:
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def write_teacher_logits(
    path: str | Path, records: Iterable[tuple[str, list[int], np.ndarray]], tok: Tokenizer, k: int
) -> Path:
    """Write (uid, target token ids [n], full teacher logits [n, V]) records as a teacher file."""
    uids, offsets, token_ids, top_ids, top_logits = [], [0], [], [], []
    vocab = None
    for uid, targets, logits in records:
        logits = np.asarray(logits, np.float32)
        if logits.ndim != 2 or logits.shape[0] != len(targets):
            raise TeacherLogitsError(f"{uid}: logits {logits.shape} do not match {len(targets)} target tokens")
        vocab = logits.shape[1]
        idx = np.argsort(-logits, axis=1)[:, :k]
        uids.append(uid)
        offsets.append(offsets[-1] + len(targets))
        token_ids.extend(targets)
        top_ids.append(idx.astype(np.int32))
        top_logits.append(np.take_along_axis(logits, idx, 1).astype(np.float16))
    if not uids:
        raise TeacherLogitsError("no records to write")
    meta = {"format": FORMAT, "version": VERSION, "k": k, "vocab_size": vocab, "tokenizer_sha256": tokenizer_sha256(tok)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(
            f, meta=np.array(json.dumps(meta)), uids=np.array(uids), offsets=np.asarray(offsets, np.int64),
            token_ids=np.asarray(token_ids, np.int32), topk_ids=np.concatenate(top_ids),
            topk_logits=np.concatenate(top_logits),
        )
    return path


class TeacherLogits:
    """Read-only view of a teacher file, looked up by sample uid."""

    def __init__(self, path: str | Path, tok: Tokenizer) -> None:
        path = Path(path)
        if not path.is_file():
            raise TeacherLogitsError(f"teacher logits file not found: {path}")
        try:
            data = np.load(path, allow_pickle=False)
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in ("uids", "offsets", "token_ids", "topk_ids", "topk_logits")}
        except (OSError, ValueError, KeyError) as e:
            raise TeacherLogitsError(f"{path} is not a teacher logits file: {e}") from None
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise TeacherLogitsError(f"{path}: format {meta.get('format')!r} v{meta.get('version')}, expected {FORMAT} v{VERSION}")
        if meta.get("tokenizer_sha256") != tokenizer_sha256(tok):
            raise TeacherLogitsError(f"{path} was made with another tokenizer than this run's tokenizer.json")
        self.k = int(meta["k"])
        self.vocab_size = int(meta["vocab_size"])
        self._offsets = arrays["offsets"]
        self._token_ids = arrays["token_ids"]
        self._ids = arrays["topk_ids"]
        self._logits = arrays["topk_logits"]
        self._index = {str(u): i for i, u in enumerate(arrays["uids"])}
        self.mismatched = 0  # samples found but not aligned with the student's targets

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, uid: str, targets: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """(topk_ids [n, K], topk_logits [n, K]) for a sample whose target ids are `targets`."""
        i = self._index.get(uid)
        if i is None:
            return None
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        if b - a != len(targets) or not np.array_equal(self._token_ids[a:b], targets):
            self.mismatched += 1
            return None
        return self._ids[a:b], self._logits[a:b].astype(np.float32)


def distill_kl(
    student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logits: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) at temperature T, times T^2, on the teacher's top-k ids.

    student_logits [N, V] and teacher [N, K] rows are target positions; mask [N] selects the
    distilled ones. Both distributions are renormalised over the same K ids (exact KL when K = V),
    so a student equal to its teacher has zero loss.
    """
    if not bool(mask.any()):
        return student_logits.sum() * 0.0
    s = F.log_softmax(student_logits[mask].float().gather(1, topk_ids[mask].long()) / temperature, dim=-1)
    t = F.log_softmax(topk_logits[mask].float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean() * temperature**2


@torch.no_grad()
def teacher_records(model: torch.nn.Module, loader: Iterable[dict]) -> Iterable[tuple[str, list[int], np.ndarray]]:
    """(uid, target ids, logits [n, V]) per sample from a teacher EmberVLM over collated batches
    (the same prompt/target layout the student trains on)."""
    model.eval()
    for batch in loader:
        out = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["prompt_lengths"])
        for i, uid in enumerate(batch["uid"]):
            start = int(batch["prompt_lengths"][i])
            targets = batch["labels"][i][batch["labels"][i] != -100].tolist()
            n = len(targets)
            if n:
                yield uid, targets, out.lm_logits[i, start - 1 : start - 1 + n].float().cpu().numpy()
