"""A stage reads its batches from one DataLoader iterator for the whole stage, not one per epoch.

The robot files have 198 tasks: at a GPU batch of 64 an epoch of stage 4 is 2-3 batches, and a
fresh iterator per epoch forked every loader worker again and left the GPU waiting for the first
batch of each epoch (stage 4 at 1.95 steps/s on an H200 with 8 workers, 200 steps). The batches must
stay exactly those of the per-epoch loaders (same samples, same augmentation), also after a resume."""

from __future__ import annotations

import hashlib
import os
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ember_training.config import load_config
from ember_training.data.dataset import StageDataset
from ember_training.data.sampler import ResumableSampler
from ember_training.train_state import DataPosition
from ember_training.trainer import Trainer

from .training_helpers import quick_overrides, write_config

BATCH = 8


def _trainer(tmp_path: Path, synth_dir: Path, workers: int, steps: int = 2) -> Trainer:
    over = {**quick_overrides(steps=steps, batch=BATCH), "data.num_workers": workers, "tracking.codecarbon": False}
    return Trainer(load_config(write_config(tmp_path / "c.yaml", over)), tmp_path / "out", synth_dir)


def _draws(batches) -> list[tuple[str, str]]:
    return [(uid, hashlib.sha1(px.numpy().tobytes()).hexdigest())
            for batch in batches for uid, px in zip(batch["uid"], batch["pixel_values"], strict=True)]


def _per_epoch_reference(run, epochs: int) -> list[list[tuple[str, str]]]:
    """What a fresh DataLoader per epoch (the trainer before this change) gives, epoch by epoch."""
    out = []
    for epoch in range(epochs):
        sampler = ResumableSampler(run.dataset, 1, 0, run.sampler.seed, run.batch_size)
        sampler.set_epoch(epoch)
        run.dataset.set_epoch(epoch)
        loader = DataLoader(run.dataset, batch_size=run.batch_size, sampler=sampler, drop_last=True,
                            collate_fn=run.loader.collate_fn)
        out.append(_draws(loader))
    return out


def test_the_stage_stream_gives_the_per_epoch_loaders_batches_also_after_a_resume(tmp_path, synth_dir):
    trainer = _trainer(tmp_path, synth_dir, workers=0)
    trainer.prepare()
    run = trainer._setup(1, None)
    per_epoch = run.loader.batch_sampler.per_epoch
    assert per_epoch >= 2
    ref = _per_epoch_reference(run, 3)
    flat = [d for epoch in ref for d in epoch]
    assert len(flat) == 3 * per_epoch * BATCH
    assert _draws(islice(trainer._batches(run), 3 * per_epoch)) == flat
    assert run.pos == DataPosition(epoch=3, batches=0)

    cases = {  # a checkpoint's position -> where the resumed stream starts in `flat`
        (1, 1): (per_epoch + 1) * BATCH,
        (0, per_epoch): per_epoch * BATCH,  # written by the old loop right after an epoch's last batch
        (2, 0): 2 * per_epoch * BATCH,
        (0, per_epoch + 1): per_epoch * BATCH,  # written with fewer ranks (longer epochs): the rest of it is skipped
    }
    for (epoch, done), start in cases.items():
        run.pos = DataPosition(epoch=epoch, batches=done)
        left = (len(flat) - start) // BATCH
        assert _draws(islice(trainer._batches(run), left)) == flat[start:], (epoch, done)


def test_loader_workers_start_once_per_stage_not_once_per_epoch(tmp_path, synth_dir, monkeypatch):
    pids = tmp_path / "pids"
    original = StageDataset.__getitem__

    def recording(self, index):
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return original(self, index)

    monkeypatch.setattr(StageDataset, "__getitem__", recording)
    trainer = _trainer(tmp_path, synth_dir, workers=2, steps=10)
    trainer.prepare()
    run = trainer._setup(1, None)
    per_epoch = len(run.sampler) // run.batch_size
    assert 10 >= 3 * per_epoch, per_epoch  # the stage spans at least three epochs
    result = trainer.run_stage(1)
    assert result.steps == 10
    workers = set(pids.read_text().split()) - {str(os.getpid())}  # the set-up's probe batch is read here
    assert len(workers) == 2, f"{len(workers)} worker processes for 2 workers over {10 / per_epoch:.1f} epochs"
    assert torch.isfinite(torch.tensor(result.last_loss))
