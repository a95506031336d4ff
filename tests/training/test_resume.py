"""Exact resume, and a writer killed mid-checkpoint leaving the previous checkpoint loadable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import torch

from ember_training.checkpoint_format import load_checkpoint
from ember_training.config import load_config
from ember_training.train_state import latest_checkpoint, step_checkpoints
from ember_training.trainer import Trainer, stage_dir

from .training_helpers import quick_overrides, write_config


def _stage4_run_dir(tiny_run, dest):
    """A run directory holding the tiny run's tokenizer and stage-3 result (stage 4 starts there)."""
    dest.mkdir()
    shutil.copy(tiny_run.out / "tokenizer.json", dest)
    shutil.copytree(tiny_run.out / "data", dest / "data")
    s3 = stage_dir(tiny_run.out, 3)
    (dest / s3.name).mkdir()
    shutil.copy(s3 / "final.pt", dest / s3.name / "final.pt")
    return dest


def _stage4_straight_and_stopped(tiny_run, tmp_path, over: dict, stop_at: int):
    """(config, run dir of stage 4 run straight through, run dir of the same run stopped after
    `stop_at` steps), both starting from the tiny run's stage 3."""
    cfg = load_config(write_config(tmp_path / "c.yaml", over))
    straight = _stage4_run_dir(tiny_run, tmp_path / "straight")
    Trainer(cfg, straight).run([4])
    broken = _stage4_run_dir(tiny_run, tmp_path / "broken")
    first = Trainer(cfg, broken)
    first.prepare()
    first.run_stage(4, stop_at=stop_at)
    return cfg, straight, broken


def _losses(sdir):
    return [json.loads(line)["loss"] for line in (sdir / "metrics.jsonl").read_text().splitlines()]


def test_resume_equals_uninterrupted(tiny_run, tmp_path):
    """Stage 4 (pairing, chain-of-thought targets, grad accumulation, epochs crossed):
    N steps + resume + N steps gives the losses and weights of 2N steps, also when the kill
    left half a metrics record behind."""
    over = {**quick_overrides(steps=6, batch=4), "data.max_samples_per_dataset": 5, "train.grad_accum": 2,
            "train.checkpoint_every": 100}
    cfg, straight, broken = _stage4_straight_and_stopped(tiny_run, tmp_path, over, stop_at=3)
    assert [p.name for p in step_checkpoints(stage_dir(broken, 4))] == ["step_000003.pt"]
    assert not (stage_dir(broken, 4) / "final.pt").exists()
    with (stage_dir(broken, 4) / "metrics.jsonl").open("a") as fh:  # killed while writing step 4's record
        fh.write('{"step": 4, "loss": 2.')
    resumed = Trainer(cfg, broken, resume=True)
    resumed.run([4])
    a, b = _losses(stage_dir(straight, 4)), _losses(stage_dir(broken, 4))
    assert len(a) == 6 and a == b
    wa = load_checkpoint(stage_dir(straight, 4) / "final.pt")
    wb = load_checkpoint(stage_dir(broken, 4) / "final.pt")
    assert wa["data_position"]["epoch"] >= 1, "the run should cross an epoch boundary"
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert wa["data_position"] == wb["data_position"]


KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    from ember_training.config import load_config
    from ember_training.trainer import Trainer

    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, fh, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: write part of it, then die
            fh.write(b"\\x80\\x02partial checkpoint bytes" * 1000)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, fh, *a, **k)

    torch.save = dying_save
    torch.set_num_threads(1)
    Trainer(load_config(sys.argv[1]), sys.argv[2], sys.argv[3]).run([1])
""")


def test_kill_during_checkpoint_write_keeps_previous(synth_dir, tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", {**quick_overrides(steps=3), "train.checkpoint_every": 1,
                                                 "tracking.codecarbon": False})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(cfg_path), str(out), str(synth_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    sdir = stage_dir(out, 1)
    leftovers = list((sdir / "checkpoints").glob(".*.tmp"))
    assert leftovers, "the killed writer should have left its temp file"
    ckpt = latest_checkpoint(sdir)
    assert ckpt is not None and ckpt["step"] == 1
    # and the run resumes from it to the end
    Trainer(load_config(cfg_path), out, synth_dir, resume=True).run([1])
    assert load_checkpoint(sdir / "final.pt")["step"] == 3
    assert not list((sdir / "checkpoints").glob(".*.tmp"))
