"""Helpers of the training tests: tiny config files and config-read recording."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "config" / "train" / "tiny.yaml"

SMALL_SYNTH = {"scenes": 48, "caption_images": 12, "image_size": 64, "seed": 0}


def write_config(path: Path, overrides: dict[str, Any], base: Path = TINY) -> Path:
    """tiny.yaml with dotted-key overrides ({"stages.alignment.steps": 2, ...}) written to `path`."""
    raw = yaml.safe_load(base.read_text())
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def quick_overrides(steps: int = 2, batch: int = 4) -> dict[str, Any]:
    """Tiny run settings for tests: few steps, small batches, no progress bars."""
    out: dict[str, Any] = {f"stages.{s}.steps": steps for s in ("alignment", "instruct", "incidents", "reasoning")}
    out.update({"train.batch_size": batch, "train.warmup_steps": 1, "train.checkpoint_every": 1,
                "tracking.progress": False, "data.synth": dict(SMALL_SYNTH), "data.max_samples_per_dataset": 24,
                "data.tokenizer_corpus_limit": 2000})
    return out


@contextmanager
def record_config_reads() -> Iterator[set[tuple[str, str]]]:
    """Record (class, field) of every config field read outside dataclasses/config validation."""
    from ember_training import config as config_mod
    from ember_training.model import config as model_config_mod

    classes = [c for mod in (config_mod, model_config_mod) for c in vars(mod).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == mod.__name__]
    ignored_files = {dataclasses.__file__}
    ignored_functions = {"__post_init__", "check", "__new__", "to_dict"}  # validation / serialisation
    reads: set[tuple[str, str]] = set()
    fields = {c: {f.name for f in dataclasses.fields(c)} for c in classes}

    def getter(self, name):
        names = fields.get(type(self))
        code = sys._getframe(1).f_code
        if names and name in names and code.co_filename not in ignored_files and code.co_name not in ignored_functions:
            reads.add((type(self).__name__, name))
        return object.__getattribute__(self, name)

    for c in classes:
        c.__getattribute__ = getter
    try:
        yield reads
    finally:
        for c in classes:
            del c.__getattribute__


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (MASTER_PORT of spawned DDP ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage1_epoch(trainer: Any) -> tuple[Any, list[tuple[str, str]]]:
    """Stage 1 set up as ember-train does it and one epoch read: (the run, [(uid, sha1 of its pixels)])."""
    trainer.prepare()
    run = trainer._setup(1, None)
    stream = run.loader.batch_sampler  # endless (data/sampler.py StageBatches): epoch 0's batches
    stream.start_at(0, 0)
    draws = [(uid, hashlib.sha1(px.numpy().tobytes()).hexdigest())
             for batch in islice(run.loader, stream.per_epoch)
             for uid, px in zip(batch["uid"], batch["pixel_values"], strict=True)]
    return run, draws


def coco_with_truncated_images(synth_dir: Path, data: Path) -> Path:
    """A copy of the generated data at `data` whose COCO images are cut to 200 bytes, except the four
    the freeze probe reads in the main process: a loader worker meets the first truncated one."""
    shutil.copytree(synth_dir, data)
    coco = json.loads((data / "coco/annotations/captions_train2017.json").read_text())
    names = {i["id"]: i["file_name"] for i in coco["images"]}
    probe = {names.get(a["image_id"]) for a in coco["annotations"][:4]}
    for path in (data / "coco/train2017").iterdir():
        if path.name not in probe:
            path.write_bytes(path.read_bytes()[:200])
    return data
