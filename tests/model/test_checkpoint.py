"""The shared checkpoint format: save/load round trip, extra keys, clear errors."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from ember_training.checkpoint_format import (
    CheckpointError,
    atomic_torch_save,
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


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_checkpoints_get_the_permissions_of_the_umask_like_any_file(tmp_path, umask):
    """A checkpoint is written to a temp file and renamed; mkstemp made that file 0600, so on a
    shared GPU server a teammate could not export or evaluate another's checkpoint (the umask said
    0644). Now it is what open() would create under the process's umask."""
    old = os.umask(umask)
    try:
        path = atomic_torch_save({"step": 1}, tmp_path / "ck.pt")
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
