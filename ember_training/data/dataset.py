"""Samples -> tensors: images, prompt/target ids, label vectors; and the batch collator.

Text-only rows (robot selection) see a camera image like every other row, because the engine
always runs on a camera frame: each such row is paired with a *labelled incident scene* drawn
from the stage's incident pool (the Incidents1M samples; synthetic or real). The pairing is
fresh every epoch (seeded by seed, epoch and index). The robot labels come from the task text
only; the incident/place labels of the pair are those of the paired image, and the stage-4
chain of thought describes that image from its labels. No blank image is ever used.

All per-sample randomness (augmentation, pairing) derives from (seed, epoch, index, copy), so a
resumed run produces exactly the batches an uninterrupted one would, with any worker count, and
each rank and worker draws its own numbers: ranks and workers read different positions of the
epoch, and the copies of a sample that the sampler repeats (a dataset smaller than ranks x batch)
are told apart by `copy` (index `i + copy * len(dataset)`, see data/sampler.py). Copy 0 keeps the
key (seed, epoch, i) of earlier versions, so their checkpoints still resume exactly. Nothing here may
use a global RNG: a loader worker's global streams are not part of a checkpoint.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from ember.labels import NUM_INCIDENTS, NUM_PLACES, NUM_ROBOT_TYPES

from ..distill import TeacherLogits
from .common import DataError, Sample, label_vector
from .images import augment, read_rgb, to_tensor_array
from .table import SampleTable, digest_rows
from .text import robot_target
from .tokens import encode_prompt, encode_target


@dataclass
class ImageSpec:
    """How images become tensors (from ModelConfig) and whether to augment."""

    size: int
    mean: list[float]
    std: list[float]
    augment: bool


class StageDataset(Dataset):
    """One stage's mixture of samples, tokenised on the fly."""

    def __init__(
        self,
        samples: Sequence[Sample],
        tok: Tokenizer,
        image: ImageSpec,
        max_prompt_tokens: int,
        max_target_tokens: int,
        seed: int,
        pool: Sequence[Sample] | None = None,
        robot_targets: bool = False,
        two_views: bool = False,
        teacher: TeacherLogits | None = None,
    ) -> None:
        self.samples = SampleTable.of(samples)  # no per-row objects: see data/table.py
        self.pool = SampleTable.of(pool if pool is not None else [])
        if self.samples.text_only().any() and not len(self.pool):
            raise ValueError("text-only rows (robot selection) need an incident pool to pair with; "
                             "the stage has no incident images")
        self.tok = tok
        self.image = image
        self.max_prompt = max_prompt_tokens
        self.max_target = max_target_tokens
        self.seed = seed
        self.robot_targets = robot_targets  # stage 4: LM targets with reasoning, answer and plan
        self.two_views = two_views  # stage 3: a second augmented view for the consistency loss
        self.teacher = teacher
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def digest(self) -> str:
        """sha256 of the rows this dataset trains on and pairs with (uid, image file name, task, target,
        labels, plan; the images' directory is left out: nodes may keep their copies in other places)."""
        h = hashlib.sha256()
        for part, rows in (("samples", self.samples), ("pool", self.pool)):
            h.update(f"{part}:{len(rows)}".encode())
            for row in digest_rows(rows):  # from a table's columns: the bytes its Samples give (data/table.py)
                h.update(row)
        return h.hexdigest()

    def _rng(self, index: int, stream: int, epoch: int) -> np.random.Generator:
        """The random numbers of one draw: (seed, epoch, sample, stream) and, past the first copy, the copy."""
        copy, i = divmod(index, len(self.samples))
        return np.random.default_rng([self.seed, epoch, i, stream] + ([copy] if copy else []))

    def _epoch_and_index(self, index: int | tuple[int, int]) -> tuple[int, int]:
        """`(epoch, index)` as the trainer's stage-long loader gives it (data/sampler.py StageBatches),
        or an index read at `set_epoch`'s epoch."""
        return index if isinstance(index, tuple) else (self.epoch, index)

    def resolve(self, index: int | tuple[int, int]) -> tuple[Sample, str, np.ndarray | None, np.ndarray | None, str]:
        """(sample, image path, incident labels, place labels, LM target) after pairing; `index` may
        name a copy of a sample (index + copy * len(self), as the sampler repeats small datasets)
        and come with its epoch (`(epoch, index)`)."""
        epoch, index = self._epoch_and_index(index)
        s = self.samples[index % len(self.samples)]
        incidents, places, target, path = s.incidents, s.places, s.target, s.image
        if s.image is None:
            rng = self._rng(index, 1, epoch)
            pair = self.pool[int(rng.integers(len(self.pool)))]
            path, incidents, places = pair.image, pair.incidents, pair.places
            if self.robot_targets:
                target = robot_target(s.task, s.robot_set, s.steps, s.capabilities, incidents, places)
        return s, str(path), incidents, places, target

    def _view(self, rgb: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        img = augment(rgb, rng) if self.image.augment else rgb
        return torch.from_numpy(to_tensor_array(img, self.image.size, self.image.mean, self.image.std))

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        s, path, incidents, places, target = self.resolve(index)
        epoch, i = self._epoch_and_index(index)
        rng = self._rng(i, 2, epoch)
        try:  # at least twice the model's size is kept: the crop and INTER_AREA work on real pixels
            rgb = read_rgb(path, min_side=2 * self.image.size)
        except OSError:  # passed the load-time signature check: a download cut off inside the header
            raise DataError(f"cannot decode image {path} (truncated or corrupt): delete it (its rows are "
                            f"then skipped as missing) and run again with --resume") from None
        prompt = encode_prompt(self.tok, s.task, self.max_prompt)
        target_ids = encode_target(self.tok, target, self.max_target)
        item = {
            "uid": s.uid,
            "image_key": zlib.crc32(path.encode()),
            "pixel_values": self._view(rgb, rng),
            "prompt_ids": prompt,
            "target_ids": target_ids,
            "incidents": incidents if incidents is not None else label_vector(NUM_INCIDENTS),
            "places": places if places is not None else label_vector(NUM_PLACES),
            "robots": s.robots if s.robots is not None else label_vector(NUM_ROBOT_TYPES),
        }
        if self.two_views:
            item["pixel_values_2"] = self._view(rgb, rng)
        if self.teacher is not None:
            item["teacher"] = self.teacher.lookup(s.uid, target_ids)
        return item


class Collator:
    """Right-pads prompt+target into input_ids; labels are -100 on the prompt and the padding."""

    def __init__(self, pad_id: int, teacher_k: int = 0) -> None:
        self.pad_id = pad_id
        self.teacher_k = teacher_k

    def __call__(self, items: list[dict]) -> dict:
        b = len(items)
        t = max(len(it["prompt_ids"]) + len(it["target_ids"]) for it in items)
        input_ids = torch.full((b, t), self.pad_id, dtype=torch.long)
        labels = torch.full((b, t), -100, dtype=torch.long)
        attention = torch.zeros((b, t), dtype=torch.long)
        prompt_lengths = torch.zeros(b, dtype=torch.long)
        for i, it in enumerate(items):
            p, tg = it["prompt_ids"], it["target_ids"]
            ids = p + tg
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            labels[i, len(p) : len(ids)] = torch.tensor(tg, dtype=torch.long)
            prompt_lengths[i] = len(p)
        batch = {
            "uid": [it["uid"] for it in items],
            "image_key": torch.tensor([it["image_key"] for it in items], dtype=torch.long),
            "pixel_values": torch.stack([it["pixel_values"] for it in items]),
            "input_ids": input_ids,
            "attention_mask": attention,
            "prompt_lengths": prompt_lengths,
            "labels": labels,
        }
        for key in ("incidents", "places", "robots"):
            batch[key] = torch.from_numpy(np.stack([it[key] for it in items]).astype(np.int64))
        if "pixel_values_2" in items[0]:
            batch["pixel_values_2"] = torch.stack([it["pixel_values_2"] for it in items])
        if self.teacher_k:
            batch.update(self._teacher(items, t))
        return batch

    def _teacher(self, items: list[dict], t: int) -> dict:
        """Teacher top-k aligned with label positions: [B, T, K] ids/logits and a [B, T] mask."""
        b, k = len(items), self.teacher_k
        ids = torch.zeros((b, t, k), dtype=torch.long)
        logits = torch.zeros((b, t, k), dtype=torch.float32)
        mask = torch.zeros((b, t), dtype=torch.bool)
        for i, it in enumerate(items):
            if it.get("teacher") is None:
                continue
            tid, tlog = it["teacher"]
            start, n = len(it["prompt_ids"]), len(it["target_ids"])
            ids[i, start : start + n] = torch.from_numpy(np.asarray(tid, np.int64))
            logits[i, start : start + n] = torch.from_numpy(tlog)
            mask[i, start : start + n] = True
        return {"teacher_ids": ids, "teacher_logits": logits, "teacher_mask": mask}
