"""What each rank reads under DDP (2 gloo processes on the CPU, the trainer's own stage setup):
its own augmentation draws, and the same dataset files as every other rank."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import pytest

from .training_helpers import free_port, quick_overrides, stage1_epoch, write_config

JOIN_TIMEOUT_S = 120  # a hung collective fails the test instead of blocking the suite
BATCH = 4


def _digest(tensor) -> str:
    return hashlib.sha1(tensor.numpy().tobytes()).hexdigest()


def _rank_main(rank: int, port: int, cfg_path: str, out: str, data_dirs: list[str], result: str) -> None:
    """One torchrun-like rank: join the gloo group, set up stage 1 as ember-train does, read one epoch."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(len(data_dirs)), "LOCAL_RANK": str(rank), "CUDA_VISIBLE_DEVICES": ""})
    from ember_training.config import load_config
    from ember_training.distributed import init_distributed, shutdown_distributed
    from ember_training.trainer import Trainer, TrainError

    ctx = init_distributed()
    try:
        _, draws = stage1_epoch(Trainer(load_config(cfg_path), out, data_dirs[rank], ctx=ctx))
        body = {"draws": draws}
    except TrainError as e:
        body = {"error": str(e)}
    finally:
        shutdown_distributed()
    Path(result, f"rank{rank}.json").write_text(json.dumps(body))


def _ddp(cfg: Path, out: Path, data_dirs: list[Path], result: Path) -> list[dict]:
    """Run _rank_main on len(data_dirs) spawned processes; each rank's result."""
    result.mkdir(parents=True, exist_ok=True)
    spawn = mp.get_context("spawn")
    port = free_port()
    procs = [spawn.Process(target=_rank_main, args=(r, port, str(cfg), str(out), [str(d) for d in data_dirs], str(result)))
             for r in range(len(data_dirs))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    for p in procs:
        if p.is_alive():
            p.kill()
            pytest.fail(f"DDP rank hung for {JOIN_TIMEOUT_S} s")
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return [json.loads((result / f"rank{r}.json").read_text()) for r in range(len(data_dirs))]


def _config(tmp_path: Path) -> Path:
    # 5 captions for 2 ranks x batch 4: the sampler repeats them (2 copies per epoch), augmentation on,
    # 2 loader workers per rank
    return write_config(tmp_path / "c.yaml", {
        **quick_overrides(steps=2, batch=BATCH), "stages.alignment.datasets": ["coco"], "data.val_fraction": 0.0,
        "data.max_samples_per_dataset": 5, "data.num_workers": 2, "data.augment": True,
        "tracking.codecarbon": False, "tracking.plots": False})


def test_ddp_every_copy_of_a_sample_gets_its_own_augmentation(synth_dir: Path, tmp_path: Path) -> None:
    """Augmentation (and the pairing of text-only rows) used to be keyed by (seed, epoch, index) alone:
    a dataset repeated to fill ranks x batch (the 198 robot tasks on 8 GPUs) gave every copy of a sample,
    on whichever rank it landed, the same crop and flip. Now each copy draws its own, and the draws stay
    a pure function of (seed, epoch, position): the same with 0 or 2 loader workers, so a resume is exact."""
    cfg = _config(tmp_path)
    ranks = _ddp(cfg, tmp_path / "out", [synth_dir, synth_dir], tmp_path / "result")
    draws = [tuple(d) for r in ranks for d in r["draws"]]
    uids = [uid for uid, _ in draws]
    assert len(draws) == 8 and len(set(uids)) < len(uids)  # 2 ranks x 1 batch of 4 from 5 captions
    assert len({px for _, px in draws}) == len(draws), "two copies of a sample got the same augmentation"

    from ember_training.config import load_config
    from ember_training.data.build import build_stage_dataset
    from ember_training.data.sampler import ResumableSampler
    from ember_training.trainer import Trainer

    config = load_config(cfg)
    trainer = Trainer(config, tmp_path / "out", synth_dir)
    trainer.prepare()
    dataset = build_stage_dataset("alignment", config, trainer.cache, trainer.tok)
    dataset.set_epoch(0)
    for rank, got in enumerate(ranks):  # in this process, no workers: the same draws
        sampler = ResumableSampler(dataset, 2, rank, config.train.seed, BATCH)
        sampler.set_epoch(0)
        want = [(dataset[i]["uid"], _digest(dataset[i]["pixel_values"])) for i in sampler]
        want = want[: len(want) // BATCH * BATCH]  # the loader drops the last partial batch
        assert [tuple(d) for d in got["draws"]] == want


def test_ddp_ranks_with_different_data_files_stop_with_one_line(synth_dir: Path, tmp_path: Path) -> None:
    """A node-local copy of the data that differs on one node (here one caption edited) used to train
    silently on inconsistent data; every rank now stops at the stage's start naming the rank that differs."""
    other = tmp_path / "other"
    shutil.copytree(synth_dir, other)
    ann = other / "coco/annotations/captions_train2017.json"
    coco = json.loads(ann.read_text())
    coco["annotations"][0]["caption"] = "An edited caption."
    ann.write_text(json.dumps(coco))
    ranks = _ddp(_config(tmp_path), tmp_path / "out", [synth_dir, other], tmp_path / "result")
    for body in ranks:
        assert "draws" not in body, "a rank trained on data the other ranks do not have"
        error = body["error"]
        assert "\n" not in error and "rank 1" in error and "rank 0" in error and "alignment" in error, error
