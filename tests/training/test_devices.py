"""The trainer unchanged on CUDA (bf16 and fp16 autocast) and under torchrun (DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ember_training.checkpoint_format import load_checkpoint
from ember_training.config import load_config
from ember_training.trainer import Trainer, stage_dir

from .training_helpers import quick_overrides, write_config


def _rows(sdir):
    return [json.loads(line) for line in (sdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_steps(synth_dir, tmp_path, precision):
    over = {**quick_overrides(steps=4), "train.precision": precision, "tracking.codecarbon": False}
    cfg = load_config(write_config(tmp_path / "c.yaml", over))
    trainer = Trainer(cfg, tmp_path / "out", synth_dir)
    assert trainer.ctx.device.type == "cpu"  # DistContext() default; use the CUDA device explicitly
    trainer.ctx.device = torch.device("cuda")
    results = trainer.run([1, 2, 3])
    assert [r.steps for r in results] == [4, 4, 4]
    for k in (1, 2, 3):
        rows = _rows(stage_dir(tmp_path / "out", k))
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
        ckpt = load_checkpoint(stage_dir(tmp_path / "out", k) / "final.pt")
        assert all(v.device.type == "cpu" for v in ckpt["model"].values())
        assert (ckpt["scaler"] is not None) == (precision == "fp16")
        assert "cuda" in ckpt["rng"][0]


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(synth_dir, tmp_path):
    """torchrun with 2 gloo ranks: sharded data, rank-0 checkpoints and metrics, equal weights."""
    cfg = write_config(tmp_path / "c.yaml", {**quick_overrides(steps=3), "train.checkpoint_every": 2,
                                             "tracking.codecarbon": False})
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "ember_training.cli.train", "--config", str(cfg), "--stage", "1", "--output-dir", str(out),
         "--data-dir", str(synth_dir)],
        capture_output=True, text=True, timeout=500, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sdir = stage_dir(out, 1)
    assert [r["step"] for r in _rows(sdir)] == [1, 2, 3]
    ckpt = load_checkpoint(sdir / "final.pt")
    assert len(ckpt["rng"]) == 2 and ckpt["step"] == 3
