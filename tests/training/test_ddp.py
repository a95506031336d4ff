"""Multi-process training under torchrun (2 gloo ranks on the CPU): failures seen only with DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ember_training.checkpoint_format import load_checkpoint
from ember_training.distributed import TIMEOUT_ENV
from ember_training.trainer import stage_dir

from .training_helpers import quick_overrides, write_config

TIMEOUT_S = 240  # a hung collective ends the test here instead of blocking the suite


def torchrun(args: list[str], nproc: int = 2, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone -m ember_training.cli.train ARGS`; on a hang every process is killed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "ember_training.cli.train", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
        out, err = proc.communicate()
        pytest.fail(f"torchrun hung for {TIMEOUT_S} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _rows(sdir: Path) -> list[dict]:
    return [json.loads(line) for line in (sdir / "metrics.jsonl").read_text().splitlines()]


def test_ddp_rank0_work_outlasts_collective_timeout(tmp_path: Path) -> None:
    """Rank 0 alone generates the data and builds the tokenizer (on a GPU server: loads every source,
    evaluates, runs the recipe) for longer than the collectives' timeout (NCCL's is 10 min; 4 s here):
    the other ranks wait for it in `barrier` (timeout: WAIT_TIMEOUT, 24 h), and the run completes.
    It used to die with 'Timed out waiting 4000ms for recv' on rank 1."""
    synth = {"scenes": 3200, "caption_images": 400, "image_size": 96, "seed": 0}  # ~11 s of generation
    cfg = write_config(tmp_path / "c.yaml", {**quick_overrides(steps=2), "data.synth": synth,
                                             "tracking.codecarbon": False, "tracking.plots": False})
    out = tmp_path / "out"
    proc = torchrun(["--config", str(cfg), "--stage", "1", "--output-dir", str(out)], env={TIMEOUT_ENV: "4"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in _rows(stage_dir(out, 1))] == [1, 2]


@pytest.fixture(scope="module")
def ddp_stage1(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage 1 for 2 steps on 2 ranks (a step checkpoint after step 1); the output directory."""
    root = tmp_path_factory.mktemp("ddp_stage1")
    cfg = write_config(root / "c.yaml", {**quick_overrides(steps=2), "tracking.codecarbon": False,
                                         "tracking.plots": False})
    out = root / "out"
    proc = torchrun(["--config", str(cfg), "--stage", "1", "--output-dir", str(out), "--data-dir", str(synth_dir)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_ddp_logged_loss_parts_are_means_over_ranks(ddp_stage1: Path) -> None:
    """metrics.jsonl's loss and its parts are all means over the ranks, so the logged loss is the
    weighted sum of the logged parts (the parts used to be rank 0's only, the loss the mean)."""
    rows = _rows(stage_dir(ddp_stage1, 1))
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # tiny.yaml: contrastive_weight 0.5, caption_weight 0.5
        assert r["loss"] == pytest.approx(0.5 * r["contrastive"] + 0.5 * r["caption"], rel=1e-5), r


def test_ddp_ranks_draw_different_random_numbers(ddp_stage1: Path) -> None:
    """Each rank trains from its own RNG stream (dropout masks differ between ranks; every rank
    used to be seeded alike), and the checkpoint keeps each rank's state for an exact resume."""
    sdir = stage_dir(ddp_stage1, 1)
    for path in (sdir / "checkpoints" / "step_000001.pt", sdir / "final.pt"):
        rngs = load_checkpoint(path)["rng"]
        assert len(rngs) == 2
        assert not torch.equal(rngs[0]["torch"], rngs[1]["torch"]), path


def test_ddp_resume_with_more_ranks_keeps_streams_apart(ddp_stage1: Path, synth_dir: Path, tmp_path: Path) -> None:
    """A stage checkpointed by 2 ranks resumes on 3: ranks 0-1 get their saved RNG states back and
    rank 2 keeps its own stream (it used to take rank 0's, so two ranks drew the same numbers)."""
    out = tmp_path / "out"
    shutil.copytree(ddp_stage1, out)
    (stage_dir(out, 1) / "final.pt").unlink()  # interrupted after step 1's checkpoint
    cfg = ddp_stage1.parent / "c.yaml"
    proc = torchrun(["--config", str(cfg), "--stage", "1", "--output-dir", str(out), "--data-dir", str(synth_dir),
                     "--resume"], nproc=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in _rows(stage_dir(out, 1))] == [1, 2]
    rngs = [r["torch"] for r in load_checkpoint(stage_dir(out, 1) / "final.pt")["rng"]]
    assert len(rngs) == 3
    assert not any(torch.equal(rngs[i], rngs[j]) for i in range(3) for j in range(i + 1, 3))
    assert "resumes with 3 rank(s)" in proc.stderr  # the data order differs from an uninterrupted run


def test_ddp_rank0_failure_during_its_own_work_ends_the_job(tmp_path: Path) -> None:
    """Rank 0 fails while the others wait for it in `barrier` (no data where --data-dir points, found
    while it builds the tokenizer): the job ends with rank 0's message instead of waiting out the
    barrier's long timeout."""
    cfg = write_config(tmp_path / "c.yaml", {**quick_overrides(steps=2), "tracking.codecarbon": False})
    proc = torchrun(["--config", str(cfg), "--stage", "1", "--output-dir", str(tmp_path / "out"),
                     "--data-dir", str(tmp_path / "missing")])
    assert proc.returncode != 0
    assert "ember-train: coco: file not found" in proc.stderr


def test_ddp_resume_equals_uninterrupted(synth_dir: Path, tmp_path: Path) -> None:
    """2 ranks, dropout, 2 micro-batches per step: a stage resumed from step 1's checkpoint ends with
    the weights and the logged losses of the uninterrupted run (same step, data position and RNG on
    every rank)."""
    cfg = write_config(tmp_path / "c.yaml", {**quick_overrides(steps=3), "train.grad_accum": 2, "model.dropout": 0.1,
                                             "tracking.codecarbon": False, "tracking.plots": False})
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = ["--config", str(cfg), "--stage", "1", "--data-dir", str(synth_dir)]
    proc = torchrun([*args, "--output-dir", str(full)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(full, cut)
    (stage_dir(cut, 1) / "final.pt").unlink()
    (stage_dir(cut, 1) / "checkpoints" / "step_000002.pt").unlink()
    proc = torchrun([*args, "--output-dir", str(cut), "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumes at step 1" in proc.stderr
    a, b = (load_checkpoint(stage_dir(d, 1) / "final.pt") for d in (full, cut))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    drop = ("time",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in _rows(stage_dir(full, 1))] == \
        [{k: v for k, v in r.items() if k not in drop} for r in _rows(stage_dir(cut, 1))]
