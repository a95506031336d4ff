"""Every stage's loss falls when its tiny model trains on one fixed batch; prompt tokens are masked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.prompting import ANSWER_TOKEN, REASONING_TOKEN
from ember_training.config import load_config
from ember_training.data.build import SourceCache, build_stage_dataset, resolve_dirs
from ember_training.data.dataset import Collator
from ember_training.distill import (
    TeacherLogits,
    TeacherLogitsError,
    distill_kl,
    teacher_records,
    write_teacher_logits,
)
from ember_training.model import EmberVLM
from ember_training.stages import STAGE_LOSSES
from ember_training.tokenizer import build_tokenizer, pad_id

from .training_helpers import quick_overrides, write_config


@pytest.fixture(scope="module")
def setup(synth_dir, tmp_path_factory):
    cfg = load_config(write_config(tmp_path_factory.mktemp("cfg") / "c.yaml", quick_overrides()))
    dirs, needs = resolve_dirs(cfg, synth_dir, tmp_path_factory.mktemp("out"))
    assert not needs
    cache = SourceCache(cfg, dirs)
    from ember_training.config import STAGE_NAMES
    from ember_training.data.build import corpus

    tok = build_tokenizer({"kind": "bpe", "vocab_size": 512}, corpus(cfg, cache, list(STAGE_NAMES)))
    return cfg, cache, tok


def _batch(setup, stage: str, n: int = 6, teacher=None) -> dict:
    cfg, cache, tok = setup
    ds = build_stage_dataset(stage, cfg, cache, tok, teacher)
    idx = np.linspace(0, len(ds) - 1, n).astype(int)  # spread over the stage's sources
    return Collator(pad_id(tok), teacher.k if teacher else 0)([ds[int(i)] for i in idx])


def _fit(cfg, stage: str, batch: dict, steps: int = 12, lr: float = 3e-3) -> list[float]:
    torch.manual_seed(0)
    model = EmberVLM(cfg.model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = STAGE_LOSSES[stage](model, batch, cfg.stages.get(stage))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("stage", ["alignment", "instruct", "incidents", "reasoning"])
def test_loss_falls_on_a_fixed_batch(setup, stage):
    losses = _fit(setup[0], stage, _batch(setup, stage))
    assert all(np.isfinite(losses))
    assert min(losses[-3:]) < 0.8 * losses[0], losses


def test_prompt_and_padding_are_masked(setup):
    cfg, _, tok = setup
    batch = _batch(setup, "reasoning", n=4)
    for i in range(4):
        p = int(batch["prompt_lengths"][i])
        ids = batch["input_ids"][i]
        assert (batch["labels"][i, :p] == -100).all()
        assert tok.decode(ids[:p].tolist(), skip_special_tokens=False).endswith(REASONING_TOKEN)
        n = int(batch["attention_mask"][i].sum())
        assert (batch["labels"][i, p:n] == ids[p:n]).all() and (batch["labels"][i, n:] == -100).all()
        assert ANSWER_TOKEN in tok.decode(ids[p:n].tolist(), skip_special_tokens=False)


def test_text_only_rows_are_paired_with_labelled_scenes(setup):
    cfg, cache, tok = setup
    ds = build_stage_dataset("incidents", cfg, cache, tok)
    robot_rows = [i for i, s in enumerate(ds.samples) if s.image is None]
    assert robot_rows
    pool_images = {s.image for s in ds.pool}
    seen = set()
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in robot_rows[:5]:
            s, path, incidents, _, _ = ds.resolve(i)
            pair = next(p for p in ds.pool if p.image == path)
            assert path in pool_images and np.array_equal(incidents, pair.incidents)
            seen.add((i, path))
            item = ds[i]
            assert item["robots"].tolist() == s.robots.tolist()
            assert float(item["pixel_values"].std()) > 0.05  # a real scene, not a blank frame
    assert len(seen) > 5, "pairing changes with the epoch"


def test_teacher_file_roundtrip_and_distillation(setup, tmp_path):
    cfg, cache, tok = setup
    ds = build_stage_dataset("instruct", cfg, cache, tok)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(12)), batch_size=4,
                                         collate_fn=Collator(pad_id(tok)))
    torch.manual_seed(7)
    teacher_model = EmberVLM(cfg.model)
    path = write_teacher_logits(tmp_path / "t.npz", teacher_records(teacher_model, loader), tok, k=8)
    teacher = TeacherLogits(path, tok)
    assert len(teacher) == 12 and teacher.k == 8 and teacher.vocab_size == cfg.model.vocab_size
    batch = Collator(pad_id(tok), teacher.k)([build_stage_dataset("instruct", cfg, cache, tok, teacher)[i] for i in range(4)])
    assert batch["teacher_mask"].sum() == (batch["labels"] != -100).sum()
    # the student reproduces the teacher exactly: KL is 0; another student: KL > 0
    with torch.no_grad():
        out = teacher_model.eval()(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["prompt_lengths"])
    v, k = out.lm_logits.shape[-1], teacher.k
    args = (batch["teacher_ids"][:, 1:].reshape(-1, k), batch["teacher_logits"][:, 1:].reshape(-1, k),
            batch["teacher_mask"][:, 1:].reshape(-1), 2.0)
    same = distill_kl(out.lm_logits[:, :-1].reshape(-1, v), *args)
    assert same.item() < 1e-3  # fp16 storage of the teacher logits leaves a tiny gap
    other = distill_kl(torch.randn_like(out.lm_logits[:, :-1]).reshape(-1, v) * 3, *args)
    assert other.item() > 10 * max(same.item(), 1e-3)
    losses = _fit(cfg, "instruct", batch)
    assert min(losses[-3:]) < 0.8 * losses[0]
    # a teacher made with another tokenizer is refused
    other_tok = build_tokenizer({"kind": "bpe", "vocab_size": 300}, ["some other corpus text"] * 10)
    with pytest.raises(TeacherLogitsError, match="another tokenizer"):
        TeacherLogits(path, other_tok)


def test_sampler_shards_like_distributed_sampler_and_repeats_small_data():
    from torch.utils.data import DistributedSampler

    from ember_training.data.sampler import ResumableSampler

    data = list(range(50))
    for rank in (0, 1):
        ours, ref = ResumableSampler(data, 2, rank, seed=3), DistributedSampler(data, 2, rank, seed=3, drop_last=True)
        ours.set_epoch(4)
        ref.set_epoch(4)
        assert list(ours) == list(ref) and len(ours) == 25
    small = [ResumableSampler(data, 4, r, seed=0, min_per_rank=32) for r in range(4)]
    shares = [list(s) for s in small]
    assert small[0].repeats == 3 and all(len(x) == 37 for x in shares)
    assert sorted(i % 50 for x in shares for i in x)[:3] == [0, 0, 0]  # copy r of sample i is i + r * 50
