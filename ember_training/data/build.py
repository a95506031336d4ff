"""From a Config to loaded samples and a StageDataset per stage."""

from __future__ import annotations

import dataclasses
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ember.prompting import format_prompt

from ..config import Config
from ..distill import TeacherLogits
from ..distributed import DistContext
from .captions import load_coco_captions, load_flickr30k
from .common import DataError, LoadReport, Sample, gc_paused
from .dataset import ImageSpec, StageDataset
from .incidents import load_incidents
from .instruct import load_llava, load_vqa
from .robot_selection import load_robot_multi, load_robot_single
from .shared import share
from .table import SampleTable
from .text import robot_target

log = logging.getLogger("ember_training.data")

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_ROBOT_SELECTION = REPO_ROOT.parent / "shared" / "data" / "robot_selection"
SYNTH_MARKER = "SYNTHETIC"


@dataclass
class DataDirs:
    """Where this run reads its data."""

    data: Path
    robot_selection: Path


def resolve_dirs(cfg: Config, data_dir: str | Path | None, output_dir: Path) -> tuple[DataDirs, bool]:
    """(dirs, needs_synth): --data-dir, else data.data_dir, else generated data in OUT/data.

    With generated data the robot-selection files are the real ones in <repo>/../shared/data
    (the generated ones only where that directory is absent); data.robot_selection_dir wins.
    """
    explicit = data_dir or cfg.data.data_dir
    root = Path(explicit) if explicit else output_dir / "data"
    needs_synth = not explicit and not (root / SYNTH_MARKER).is_file()
    if cfg.data.robot_selection_dir:
        robot = Path(cfg.data.robot_selection_dir)
    elif explicit:
        robot = root / "robot_selection"
    elif (SHARED_ROBOT_SELECTION / cfg.data.paths.robot_single).is_file():
        robot = SHARED_ROBOT_SELECTION
    else:
        log.warning("%s not found: using the generated robot-selection files", SHARED_ROBOT_SELECTION)
        robot = root / "robot_selection"
    return DataDirs(root, robot), needs_synth


def load_source(name: str, cfg: Config, dirs: DataDirs) -> tuple[list[Sample], LoadReport]:
    """Load one dataset by name with the configured paths and per-dataset cap."""
    p, d, limit = cfg.data.paths, dirs.data, cfg.data.max_samples_per_dataset
    if name == "coco":
        return load_coco_captions(d / p.coco_captions, d / p.coco_images, limit)
    if name == "flickr30k":
        return load_flickr30k(d / p.flickr30k_captions, d / p.flickr30k_images, limit)
    if name == "llava":
        return load_llava(d / p.llava_conversations, d / p.llava_images, limit)
    if name == "vqa":
        return load_vqa(d / p.vqa_questions, d / p.vqa_annotations, d / p.vqa_images, limit)
    if name == "incidents":
        return load_incidents(d / p.incidents_annotations, d / p.incidents_images, limit)
    if name == "robot_single":
        return load_robot_single(dirs.robot_selection / p.robot_single, limit)
    if name == "robot_multi":
        return load_robot_multi(dirs.robot_selection / p.robot_multi, limit)
    raise ValueError(f"unknown dataset {name!r}")


def is_held_out(sample: Sample, fraction: float) -> bool:
    """Deterministic split by the sample's split key (same answer in every stage and run)."""
    return zlib.crc32(sample.split_key.encode()) % 10_000 < fraction * 10_000


Loaded = tuple[SampleTable, SampleTable, str]
"""A dataset's training rows, held-out rows and summary line."""


class SourceCache:
    """Loads each dataset once per run (stages share sources) and splits off the held-out rows; under
    torchrun the ranks of a node load each dataset once between them (`share`, data/shared.py)."""

    def __init__(self, cfg: Config, dirs: DataDirs, ctx: DistContext | None = None) -> None:
        self.cfg, self.dirs = cfg, dirs
        self.ctx = ctx or DistContext()
        self._cache: dict[str, Loaded] = {}

    def load(self, name: str) -> Loaded:
        """A dataset's rows, loaded and checked by this process the first time."""
        if name not in self._cache:
            with gc_paused():
                samples, report = load_source(name, self.cfg, self.dirs)
                frac = self.cfg.data.val_fraction
                held = np.array([is_held_out(s, frac) for s in samples], bool)
                table = SampleTable.of(samples)  # the per-row objects go: loader workers would copy them
                del samples
            train = table.take(np.flatnonzero(~held))
            val = table.take(np.flatnonzero(held)[: self.cfg.data.max_eval_samples])
            if not len(train):
                why = f" ({len(table)} held out by data.val_fraction={frac})" if len(table) else ""
                raise DataError(f"{report.summary()}: no usable training samples{why}")
            self._cache[name] = (train, val, report.summary())
        return self._cache[name]

    def loaded(self, name: str) -> Loaded | None:
        """The dataset's rows if this process has them (loaded or mapped), else None."""
        return self._cache.get(name)

    def put(self, name: str, loaded: Loaded) -> None:
        """Keep rows another rank loaded (mapped from its files) as this dataset's."""
        self._cache[name] = loaded

    def key(self, name: str) -> str:
        """What decides a dataset's rows: its files and the data settings the loading uses."""
        d = self.cfg.data
        return json.dumps([name, str(self.dirs.data.resolve()), str(self.dirs.robot_selection.resolve()),
                           dataclasses.asdict(d.paths), d.max_samples_per_dataset, d.val_fraction,
                           d.max_eval_samples])

    def share(self, names: list[str]) -> None:
        """Collective under torchrun (every rank, the same names): the node's local rank 0 loads each
        dataset, the node's other ranks map its rows; a single process, or ranks whose launcher does
        not give LOCAL_WORLD_SIZE, load lazily on their own as before."""
        if self.ctx.enabled and self.ctx.local_world_size > 1:
            share(self, names)

    def get(self, name: str) -> SampleTable:
        """Training samples of a dataset."""
        return self.load(name)[0]

    def held_out(self, name: str) -> SampleTable:
        """Held-out samples (at most data.max_eval_samples)."""
        return self.load(name)[1]

    def reports(self) -> dict[str, str]:
        return {name: f"{summary}; {len(val)} held out" for name, (_, val, summary) in self._cache.items()}


def share_stage(stage: str, cfg: Config, cache: SourceCache) -> None:
    """Collective under torchrun: the node's ranks load a stage's datasets (and the incident pool its
    text-only rows pair with) once between them (SourceCache.share)."""
    names = list(cfg.stages.get(stage).datasets)
    cache.share(names)
    if "incidents" not in names and any(cache.get(n).text_only().any() for n in names):
        cache.share(["incidents"])


def stage_samples(stage: str, cfg: Config, cache: SourceCache) -> tuple[SampleTable, SampleTable]:
    """(samples, incident pool) of a stage; the pool pairs text-only rows with incident scenes."""
    samples = SampleTable.concat([cache.get(name) for name in cfg.stages.get(stage).datasets])
    pool = cache.get("incidents") if samples.text_only().any() else SampleTable.of([])
    return samples, pool


def build_eval_dataset(cfg: Config, cache: SourceCache, tok: Tokenizer, robot_targets: bool,
                       sources: tuple[str, ...] = ("incidents", "robot_single", "robot_multi")) -> StageDataset:
    """Held-out incidents and robot-selection rows (robot rows paired with held-out scenes), no augmentation."""
    samples = SampleTable.concat([cache.held_out(name) for name in sources])
    pool = cache.held_out("incidents") if len(cache.held_out("incidents")) else cache.get("incidents")
    m = cfg.model
    return StageDataset(
        samples, tok, ImageSpec(m.image_size, m.image_mean, m.image_std, False), cfg.data.max_prompt_tokens,
        cfg.data.max_target_tokens, cfg.train.seed, pool=pool, robot_targets=robot_targets,
    )


def build_stage_dataset(
    stage: str, cfg: Config, cache: SourceCache, tok: Tokenizer, teacher: TeacherLogits | None = None
) -> StageDataset:
    samples, pool = stage_samples(stage, cfg, cache)
    m = cfg.model
    return StageDataset(
        samples, tok, ImageSpec(m.image_size, m.image_mean, m.image_std, cfg.data.augment),
        cfg.data.max_prompt_tokens, cfg.data.max_target_tokens, cfg.train.seed, pool=pool,
        robot_targets=stage == "reasoning", two_views=stage == "incidents", teacher=teacher,
    )


def corpus(cfg: Config, cache: SourceCache, stages: list[str]) -> Iterator[str]:
    """Texts the BPE is trained on: every prompt and target of the given stages (epoch-0 pairing
    for the stage-4 targets), at most data.tokenizer_corpus_limit texts."""
    n = 0
    for stage in stages:
        samples, pool = stage_samples(stage, cfg, cache)
        for i, s in enumerate(samples):
            if n >= cfg.data.tokenizer_corpus_limit:
                return
            target = s.target
            if s.image is None and stage == "reasoning":
                pair = pool[i % len(pool)]
                target = robot_target(s.task, s.robot_set, s.steps, s.capabilities, pair.incidents, pair.places)
            yield format_prompt(s.task) + target
            n += 1
