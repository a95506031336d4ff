"""A DistributedSampler that repeats a dataset too small for one batch per rank, and a stage's
endless batches over it that resume in the middle of an epoch (exact resume)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class ResumableSampler(DistributedSampler):
    """A seeded per-epoch permutation sharded by rank, as DistributedSampler(shuffle=True,
    drop_last=True) makes it; an epoch concatenates `repeats` permutations when the dataset has
    fewer than `min_per_rank` samples per rank (the 198 robot-selection tasks on 8 GPUs at batch
    64). StageBatches below cuts it into a stage's batches and resumes mid-epoch.

    Copy r of sample i is yielded as `i + r * len(dataset)` (an index into the dataset repeated
    `repeats` times; StageDataset takes it modulo its length), so that each copy, on whichever rank
    it lands, draws its own augmentation and pairing; with one copy the indices are DistributedSampler's."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, min_per_rank: int = 1) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        n = len(dataset)
        if n == 0:
            raise ValueError("empty dataset")
        self.repeats = max(1, math.ceil(min_per_rank * num_replicas / n))
        self.num_samples = n * self.repeats // num_replicas
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        indices = torch.cat([torch.randperm(n, generator=g) + r * n for r in range(self.repeats)]).tolist()
        return iter(indices[: self.total_size][self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


class StageBatches(Sampler[list[tuple[int, int]]]):
    """A stage's batches, epoch after epoch without end, for one DataLoader iterator per stage.

    Epoch e's batches are those of a fresh DataLoader(sampler=`sampler` at epoch e, drop_last=True),
    each index given as `(e, index)` so the dataset draws epoch e's augmentation and pairing
    (StageDataset takes such pairs) whenever a worker reads it. One iterator for the whole stage
    starts the loader workers once and keeps them prefetching across epoch boundaries; an iterator
    per epoch forked every worker again and waited for each epoch's first batch, which dominated
    a stage whose epoch is 2-3 batches (stage 4's 198 tasks at a GPU batch of 64). `start_at`
    sets where the next iterator begins (a resumed run's position)."""

    def __init__(self, sampler: ResumableSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.per_epoch = sampler.num_samples // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"{sampler.num_samples} samples per rank make no batch of {batch_size}")
        self.epoch = 0
        self.batches = 0

    def start_at(self, epoch: int, batches: int) -> None:
        """Begin the next iterator after `batches` batches of `epoch`; a whole epoch or more (an old
        checkpoint's end-of-epoch position, or one written with fewer ranks): the next epoch."""
        self.epoch, self.batches = (epoch + 1, 0) if batches >= self.per_epoch else (epoch, batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip = self.epoch, self.batches
        while True:
            self.sampler.set_epoch(epoch)
            indices = list(self.sampler)
            for b in range(skip, self.per_epoch):
                yield [(epoch, i) for i in indices[b * self.batch_size : (b + 1) * self.batch_size]]
            epoch, skip = epoch + 1, 0
