"""Fixtures of the training tests: generated data, tiny configs, one shared tiny 4-stage run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from .training_helpers import SMALL_SYNTH, quick_overrides, record_config_reads, write_config


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Generated datasets in every format, with 2 defective rows of each kind per file."""
    from ember_training.config import SynthConfig
    from ember_training.data.synth import synth_all

    out = tmp_path_factory.mktemp("synth")
    counts = synth_all(out, SynthConfig(**SMALL_SYNTH), bad_rows=2)
    (out / "counts.yaml").write_text(yaml.safe_dump(counts))
    return out


@dataclasses.dataclass
class TinyRun:
    out: Path
    config: Path
    reads: set[tuple[str, str]]
    initial_state: dict


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """All four stages, 2 steps each, on data the trainer generates itself, with a teacher
    logits file for stage 2 (made by a randomly initialised tiny EmberVLM)."""
    import torch
    from torch.utils.data import DataLoader

    from ember_training.config import load_config
    from ember_training.data.build import build_stage_dataset
    from ember_training.data.dataset import Collator
    from ember_training.distill import teacher_records, write_teacher_logits
    from ember_training.model import EmberVLM
    from ember_training.tokenizer import pad_id
    from ember_training.trainer import Trainer

    root = tmp_path_factory.mktemp("tiny_run")
    out = root / "out"
    teacher = root / "teacher.npz"
    cfg_path = write_config(root / "tiny.yaml", {**quick_overrides(), "stages.instruct.teacher_logits": str(teacher)})
    with record_config_reads() as reads:
        cfg = load_config(cfg_path)
        trainer = Trainer(cfg, out)
        trainer.prepare()
        torch.manual_seed(123)
        teacher_model = EmberVLM(cfg.model)
        ds = build_stage_dataset("instruct", cfg, trainer.cache, trainer.tok)
        loader = DataLoader(ds, batch_size=8, collate_fn=Collator(pad_id(trainer.tok)))
        write_teacher_logits(teacher, teacher_records(teacher_model, loader), trainer.tok, k=16)
        torch.manual_seed(cfg.train.seed + 1)
        initial = {k: v.clone() for k, v in EmberVLM(cfg.model).state_dict().items()}
        trainer.run([1, 2, 3, 4])
    return TinyRun(out, cfg_path, set(reads), initial)
