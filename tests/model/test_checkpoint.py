"""The shared checkpoint format: save/load round trip, extra keys, clear errors."""

from __future__ import annotations

import pytest
import torch

from ember_training.checkpoint_format import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    tokenizer_of,
)
from ember_training.testing import tiny_corpus, tiny_model
from ember_training.tokenizer import train_bpe


def test_round_trip_restores_the_same_model(tmp_path):
    model = tiny_model(seed=5)
    tok = train_bpe(tiny_corpus(), 300)
    path = save_checkpoint(
        tmp_path / "ckpt.pt", model, {"model": model.config.to_dict(), "train": {"lr": 1e-3}}, tok, 42,
        extra={"optimizer": {"state": 1}},
    )
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 42 and ckpt["optimizer"] == {"state": 1} and ckpt["config"]["train"]["lr"] == 1e-3
    restored, _ = model_from_checkpoint(ckpt)
    assert tokenizer_of(ckpt).encode("flooded street").ids == tok.encode("flooded street").ids
    x = torch.randn(1, 3, model.config.image_size, model.config.image_size)
    ids = torch.tensor([[7, 8, 9, 10]])
    with torch.no_grad():
        a, b = model(x, ids), restored(x, ids)
    assert torch.equal(a.lm_logits, b.lm_logits) and torch.equal(a.robot_logits, b.robot_logits)


def test_extra_keys_cannot_overwrite_the_model(tmp_path):
    model = tiny_model()
    with pytest.raises(KeyError, match="model"):
        save_checkpoint(tmp_path / "c.pt", model, {}, train_bpe(tiny_corpus(), 300), 0, extra={"model": {}})


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"model": {}, "step": 1}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(tmp_path / "partial.pt")
