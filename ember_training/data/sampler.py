"""A DistributedSampler that can start in the middle of an epoch (exact resume) and that repeats a
dataset too small for one batch per rank."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """A seeded per-epoch permutation sharded by rank, as DistributedSampler(shuffle=True,
    drop_last=True) makes it; an epoch concatenates `repeats` permutations when the dataset has
    fewer than `min_per_rank` samples per rank (the 198 robot-selection tasks on 8 GPUs at batch
    64); `set_start` skips the first indices of this rank's share once, after a resume.

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
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        indices = torch.cat([torch.randperm(n, generator=g) + r * n for r in range(self.repeats)]).tolist()
        mine = indices[: self.total_size][self.rank : self.total_size : self.num_replicas]
        start, self.start = self.start, 0
        return iter(mine[start:])

    def __len__(self) -> int:
        return self.num_samples - self.start
