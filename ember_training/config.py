"""The training configuration: dataclasses loaded from config/train/*.yaml (one source of truth).

A YAML file has the sections `model:` and `tokenizer:` (the model's own dataclasses, see
ember_training.model.config and ember_training.tokenizer), `data:`, `train:`, `stages:` and
`tracking:`. Loading is strict: an unknown key, a missing section or a value of the wrong type
raises ConfigError naming the key (`train.lr`, `stages.incidents.ce_weight`, ...).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ember_training.model.config import ModelConfig
from ember_training.robot_selection.config import RobotSelectionConfig
from ember_training.tokenizer import MAX_BPE_VOCAB, TOKENIZER_KINDS

STAGE_NAMES: tuple[str, ...] = ("alignment", "instruct", "incidents", "reasoning")
"""Stage k (1-based) is STAGE_NAMES[k-1]."""

DATASET_NAMES: tuple[str, ...] = (
    "coco",
    "flickr30k",
    "llava",
    "vqa",
    "incidents",
    "robot_single",
    "robot_multi",
)


STAGE_DATASETS: dict[str, tuple[str, ...]] = {
    "alignment": ("coco", "flickr30k"),
    "instruct": ("llava", "vqa", "coco", "flickr30k"),
    "incidents": ("incidents", "robot_single", "robot_multi"),
    "reasoning": ("robot_single", "robot_multi"),
}
"""Which datasets can feed each stage (the stage's loss needs what they provide)."""


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the offending key."""


@dataclass
class TokenizerConfig:
    """The `tokenizer:` section, handed to ember_training.tokenizer.build_tokenizer."""

    kind: str = "bpe"  # bpe (trained on the corpus) | gpt2 | pretrained
    vocab_size: int = MAX_BPE_VOCAB  # bpe only
    path: str | None = None  # pretrained: LM dir or tokenizer.json; bpe: reuse a trained tokenizer.json
    min_frequency: int = 2  # bpe only

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZER_KINDS:
            raise ConfigError(f"tokenizer.kind must be one of {', '.join(TOKENIZER_KINDS)}, got {self.kind!r}")
        if self.kind == "bpe" and not 256 < self.vocab_size <= MAX_BPE_VOCAB:
            raise ConfigError(f"tokenizer.vocab_size must be in (256, {MAX_BPE_VOCAB}] for bpe, got {self.vocab_size}")
        if self.kind == "pretrained" and not self.path:
            raise ConfigError("tokenizer.path is required for kind 'pretrained'")
        _positive("tokenizer.min_frequency", self.min_frequency)


@dataclass
class DataPaths:
    """Where each public dataset lives, relative to the data directory (the official layouts)."""

    coco_captions: str = "coco/annotations/captions_train2017.json"
    coco_images: str = "coco/train2017"
    flickr30k_captions: str = "flickr30k/results.csv"  # results.csv (pipe separated) or Karpathy .json
    flickr30k_images: str = "flickr30k/flickr30k_images"
    llava_conversations: str = "llava/llava_instruct_150k.json"
    llava_images: str = "coco/train2017"
    vqa_questions: str = "vqa/v2_OpenEnded_mscoco_train2014_questions.json"
    vqa_annotations: str = "vqa/v2_mscoco_train2014_annotations.json"
    vqa_images: str = "coco/train2014"
    incidents_annotations: str = "incidents/multi_label_train.json"
    incidents_images: str = "incidents/images"
    robot_single: str = "single_robot_selection.json"  # relative to the robot-selection directory
    robot_multi: str = "multi_robot_selection_dataset.json"


@dataclass
class SynthConfig:
    """Sizes of the generated datasets (`ember-data synth`, and ember-train without --data-dir)."""

    scenes: int = 240  # incident scenes (Incidents1M format)
    caption_images: int = 120  # images of the COCO / Flickr30k / LLaVA / VQA files each
    image_size: int = 128  # side of the written JPEGs
    seed: int = 0

    def __post_init__(self) -> None:
        _positive("data.synth.scenes", self.scenes)
        _positive("data.synth.caption_images", self.caption_images)
        _positive("data.synth.image_size", self.image_size)


@dataclass
class DataConfig:
    """What the loaders read and how samples become tensors."""

    data_dir: str | None = None  # None: generate synthetic data into <output-dir>/data
    # None: <data_dir>/robot_selection; with generated data, <repo>/../shared/data/robot_selection
    robot_selection_dir: str | None = None
    paths: DataPaths = field(default_factory=DataPaths)
    synth: SynthConfig = field(default_factory=SynthConfig)
    max_prompt_tokens: int = 64
    max_target_tokens: int = 96
    max_samples_per_dataset: int | None = None  # cap per source (quick runs); None = all
    val_fraction: float = 0.1  # held out (by image / task) for the evaluation after stages 3 and 4
    max_eval_samples: int = 256  # per source, of the held-out rows
    augment: bool = True  # random crop + flip + colour jitter, seeded per (epoch, index)
    num_workers: int = 0
    tokenizer_corpus_limit: int = 200_000  # at most this many texts to train the BPE on

    def __post_init__(self) -> None:
        _positive("data.max_prompt_tokens", self.max_prompt_tokens)
        _positive("data.max_target_tokens", self.max_target_tokens)
        _positive("data.tokenizer_corpus_limit", self.tokenizer_corpus_limit)
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.max_samples_per_dataset is not None:
            _positive("data.max_samples_per_dataset", self.max_samples_per_dataset)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        _positive("data.max_eval_samples", self.max_eval_samples)


@dataclass
class TrainConfig:
    """Optimisation settings shared by the stages (a stage may override lr and batch_size)."""

    seed: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0  # <= 0 disables clipping
    precision: str = "bf16"  # bf16 | fp16 | fp32 autocast on CUDA; CPU always runs fp32
    checkpoint_every: int = 50  # optimizer steps
    keep_checkpoints: int = 2  # step checkpoints kept besides final.pt
    log_every: int = 1
    cpu_threads: int | None = None  # torch intra-op threads on CPU; None = torch's default

    def __post_init__(self) -> None:
        if self.cpu_threads is not None:
            _positive("train.cpu_threads", self.cpu_threads)
        _positive("train.batch_size", self.batch_size)
        _positive("train.grad_accum", self.grad_accum)
        _positive("train.lr", self.lr)
        _positive("train.checkpoint_every", self.checkpoint_every)
        _positive("train.keep_checkpoints", self.keep_checkpoints)
        _positive("train.log_every", self.log_every)
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be two values in [0, 1), got {self.betas}")
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ConfigError(f"train.precision must be bf16, fp16 or fp32, got {self.precision!r}")


@dataclass
class StageCommon:
    """Fields every stage has."""

    steps: int = 100  # optimizer steps
    lr: float | None = None  # None: train.lr
    batch_size: int | None = None  # None: train.batch_size
    datasets: list[str] = field(default_factory=list)

    def check(self, name: str) -> None:
        _positive(f"stages.{name}.steps", self.steps)
        if self.lr is not None:
            _positive(f"stages.{name}.lr", self.lr)
        if self.batch_size is not None:
            _positive(f"stages.{name}.batch_size", self.batch_size)
        if not self.datasets:
            raise ConfigError(f"stages.{name}.datasets is empty")
        if len(set(self.datasets)) != len(self.datasets):
            raise ConfigError(f"stages.{name}.datasets lists a dataset twice: {self.datasets}")
        for f in dataclasses.fields(self):  # loss weights: 0 switches a term off, < 0 would maximise it
            if f.name.endswith("_weight") and getattr(self, f.name) < 0:
                raise ConfigError(f"stages.{name}.{f.name} must be >= 0, got {getattr(self, f.name)}")
        allowed = STAGE_DATASETS[name]
        for ds in self.datasets:
            if ds not in allowed:
                raise ConfigError(f"stages.{name}.datasets: {ds!r} cannot feed this stage; allowed: {', '.join(allowed)}")


@dataclass
class AlignmentStage(StageCommon):
    """Stage 1: image/caption pairs; 0.5 contrastive (InfoNCE) + 0.5 captioning."""

    datasets: list[str] = field(default_factory=lambda: ["coco", "flickr30k"])
    contrastive_weight: float = 0.5  # InfoNCE with the model's learnable logit scale
    caption_weight: float = 0.5

    def __post_init__(self) -> None:
        self.check("alignment")


@dataclass
class InstructStage(StageCommon):
    """Stage 2: LLaVA-Instruct + VQA v2; 0.7 SFT + 0.3 KL distillation when teacher_logits is set."""

    datasets: list[str] = field(default_factory=lambda: ["llava", "vqa"])
    sft_weight: float = 0.7
    distill_weight: float = 0.3
    distill_temperature: float = 2.0
    teacher_logits: str | None = None  # .npz in the format of ember_training.distill

    def __post_init__(self) -> None:
        self.check("instruct")
        _positive("stages.instruct.distill_temperature", self.distill_temperature)


@dataclass
class IncidentsStage(StageCommon):
    """Stage 3: Incidents1M + robot-selection sets; 0.6 head cross-entropy + 0.4 two-view consistency."""

    datasets: list[str] = field(default_factory=lambda: ["incidents", "robot_single"])
    ce_weight: float = 0.6
    consistency_weight: float = 0.4
    confidence_weight: float = 0.2  # share of the confidence head inside the CE term

    def __post_init__(self) -> None:
        self.check("incidents")


@dataclass
class ReasoningStage(StageCommon):
    """Stage 4: chain of thought + robot selection + action plans; SFT + 0.1 reasoning smoothness.

    head_weight > 0 adds stage 3's head losses (on the paired scenes' labels and the robot sets)
    on the same forward pass, so the heads the robots read stay trained while the decoder moves
    (the seed has 0; without it the tiny run's held-out incident F1 fell from 0.70 to 0.22)."""

    datasets: list[str] = field(default_factory=lambda: ["robot_single", "robot_multi"])
    sft_weight: float = 1.0
    smoothness_weight: float = 0.1
    head_weight: float = 0.5
    confidence_weight: float = 0.2

    def __post_init__(self) -> None:
        self.check("reasoning")


@dataclass
class StagesConfig:
    alignment: AlignmentStage = field(default_factory=AlignmentStage)
    instruct: InstructStage = field(default_factory=InstructStage)
    incidents: IncidentsStage = field(default_factory=IncidentsStage)
    reasoning: ReasoningStage = field(default_factory=ReasoningStage)

    def get(self, name: str) -> StageCommon:
        return getattr(self, name)


@dataclass
class TrackingConfig:
    """Emissions, plots and optional Weights & Biases."""

    country_iso_code: str = "USA"  # CodeCarbon offline tracker's grid region
    codecarbon: bool = True
    plots: bool = True
    progress: bool = True  # tqdm bars (rank 0)
    wandb_project: str | None = None  # used only if wandb is installed and this is set

    def __post_init__(self) -> None:
        code = self.country_iso_code
        if len(code) != 3 or not code.isalpha() or not code.isupper():
            raise ConfigError(f"tracking.country_iso_code must be an ISO 3166 alpha-3 code like 'USA', got {code!r}")


@dataclass
class Config:
    """A whole training config file."""

    model: ModelConfig
    tokenizer: TokenizerConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # issue 7: robot-selection recipe after stage 4 (ember_training.robot_selection; off by default)
    robot_selection: RobotSelectionConfig = field(default_factory=RobotSelectionConfig)
    source: str = ""  # the file it was loaded from (not a YAML key)

    def __post_init__(self) -> None:
        if self.tokenizer.kind == "bpe" and self.tokenizer.vocab_size > self.model.vocab_size:
            raise ConfigError(
                f"tokenizer.vocab_size={self.tokenizer.vocab_size} exceeds model.vocab_size={self.model.vocab_size}"
            )
        longest = self.model.num_visual_tokens + self.data.max_prompt_tokens + self.data.max_target_tokens
        if longest > self.model.n_positions:
            raise ConfigError(
                f"model.num_visual_tokens + data.max_prompt_tokens + data.max_target_tokens = {longest} "
                f"exceeds model.n_positions={self.model.n_positions}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what checkpoints and the output directory record)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


def load_config(path: str | Path) -> Config:
    """Load and validate a YAML training config; ConfigError names any bad key.

    A config may start with `extends: other.yaml` (relative to its own directory): it is then
    the other file with this file's mappings merged over it, key by key, so a short-schedule
    config never repeats (and cannot drift from) the architecture it trains.
    """
    path = Path(path)
    raw = _read_with_extends(path, seen=())
    try:
        cfg = config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg.source = str(path)
    return cfg


def apply_overrides(cfg: Config, overrides: typing.Mapping[str, Any]) -> Config:
    """`cfg` with dotted-key overrides (`{"robot_selection.steps": 200}`, as `--set` gives them)
    checked like the YAML itself: a misspelt key, a wrong type or a value a section refuses is a
    ConfigError naming it, never an attribute nobody reads."""
    if not overrides:
        return cfg
    raw = cfg.to_dict()
    for dotted, value in overrides.items():
        node, *parents, leaf = raw, *dotted.split(".")
        for depth, key in enumerate(parents):
            if not isinstance(node.get(key), dict):
                where = ".".join(parents[:depth]) or "config"
                raise ConfigError(f"unknown key {'.'.join(parents[:depth + 1])} in --set {dotted}; "
                                  f"known in {where}: {', '.join(sorted(node))}")
            node = node[key]
        node[leaf] = value
    out = config_from_dict(raw)
    out.source = cfg.source
    return out


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key {key!r} is given twice (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _read_with_extends(path: Path, seen: tuple[Path, ...]) -> Any:
    """The parsed YAML of `path` with its `extends:` chain resolved."""
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle through {', '.join(str(p) for p in seen)}")
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw
    base_name = raw.pop("extends")
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"{path}: 'extends' must name a YAML file, got {base_name!r}")
    base = _read_with_extends(path.parent / base_name, (*seen, resolved))
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: the config it extends ({base_name}) is not a mapping of sections")
    return _deep_merge(base, raw)


def _deep_merge(base: dict, override: dict) -> dict:
    """`base` with `override` merged in: mappings recursively, everything else replaced; an empty
    (null) section over a mapping overrides nothing (`train:` with its keys commented out)."""
    out = dict(base)
    for key, value in override.items():
        if value is None and isinstance(out.get(key), dict):
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(raw: Any) -> Config:
    """Build a Config from parsed YAML (a mapping with model/tokenizer/data/train/stages/tracking)."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of sections")
    for required in ("model", "tokenizer"):
        if required not in raw:
            raise ConfigError(f"missing section {required!r}")
    raw = {k: v for k, v in raw.items()}
    if "source" in raw:
        raise ConfigError("unknown section 'source'")
    return _build(Config, raw, "")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Strictly build dataclass `cls` from a mapping: unknown keys and wrong types name the key."""
    where = prefix.rstrip(".") or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "source"}
    unknown = sorted(set(raw) - names)
    if unknown:
        keys = ", ".join(prefix + k for k in unknown)
        raise ConfigError(f"unknown key(s) {keys}; known in {where}: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(hints[name], value, prefix + name) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against annotation `tp` (ints widen to float); recurse into dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")
