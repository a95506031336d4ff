"""The `robot_selection:` section of config/train/*.yaml (read by the recipe and the trainer hooks).

    robot_selection:
      enabled: true            # run the recipe after stage 4 (and the tokenizer/embedding hooks)
      steps: 1500              # optimizer steps of the recipe phase
      lr: 3.0e-4
      batch_size: 32           # labelled task prompts per step
      distill_batch_size: 64   # teacher-distillation texts per step
      ...

Every field is read by ember_training.robot_selection.recipe; see the comments there.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SelectorConfig:
    """The bundle's text robot selector (ember_training.robot_selection.selector): a word-level
    static encoder distilled from the teacher, int8 in the bundle, with a label-set head."""

    enabled: bool = True
    words: int = 20000  # teacher-vocabulary words in its table (+ every word of the train tasks)
    dim: int = 128  # width of the word vectors (a PCA of the teacher space)
    steps: int = 1500  # distillation steps (Adam, 1 - cos to the PCA'd teacher embedding)
    batch_size: int = 256
    lr: float = 3.0e-3
    variants_per_task: int = 8  # distillation texts: augmentations of each train task,
    recombinations: int = 1500  # clause recombinations of train tasks,
    phrases: int = 15000  # random phrases over teacher words (+ the `words` themselves, + train subtasks)
    head_c: float = 10.0  # inverse L2 strength of the label-set logistic regression
    step_head_c: float = 10.0  # same for the plan-step robot head (per step position); 0 = no step head

    def __post_init__(self) -> None:
        for name in ("words", "dim", "steps", "batch_size", "lr", "head_c"):
            if not getattr(self, name) > 0:
                raise ValueError(f"robot_selection.selector.{name} must be > 0, got {getattr(self, name)}")
        for name in ("variants_per_task", "recombinations", "phrases", "step_head_c"):
            if getattr(self, name) < 0:
                raise ValueError(f"robot_selection.selector.{name} must be >= 0, got {getattr(self, name)}")
        if self.dim > 384:
            raise ValueError(f"robot_selection.selector.dim must be <= 384 (the teacher's width), got {self.dim}")


@dataclass
class RobotSelectionConfig:
    """Robot-selection recipe: MiniLM distillation into the text pathway + robot heads."""

    enabled: bool = False
    steps: int = 1500
    lr: float = 3e-4
    warmup_steps: int = 50
    batch_size: int = 32
    distill_batch_size: int = 64
    # loss weights (0 turns a term off)
    supervised_weight: float = 1.0  # BCE of the robot head on the train split's labelled tasks
    distill_weight: float = 1.0  # cosine of the pooled state to the teacher embedding (fixed PCA projection)
    teacher_soft_weight: float = 1.0  # BCE of the robot head to the teacher classifier's marginals
    lm_weight: float = 0.2  # stage-4 SFT (reasoning, answer, plan) on the labelled tasks, keeps plans
    # distillation texts (train split only, plus a task-independent generic corpus)
    variants_per_task: int = 8  # label-preserving augmentations per labelled task
    recombinations: int = 1500  # head/tail recombinations of train-split tasks
    use_subtasks: bool = True  # the train split's plan subtask texts
    generic_words: int = 20000  # teacher vocabulary words (also added to the BPE corpus)
    generic_phrases: int = 15000  # random phrases over the most frequent teacher words
    # teacher classifier (MiniLM embedding -> label-set logistic regression) for soft targets
    teacher_c: float = 10.0
    # token-embedding initialisation from teacher vectors of each token's text (0 = off)
    init_embeddings: float = 0.5
    # per-robot thresholds: inner grouped CV of the teacher classifier on the train split
    calibrate_thresholds: bool = True
    inner_folds: int = 4
    teacher_cache: str | None = None  # .npz cache of teacher embeddings (null: none)
    augment_task_prob: float = 0.5  # chance a labelled prompt is an augmentation of its task
    # the text robot selector that ships in the bundle beside the VLM (decides text tasks)
    selector: SelectorConfig = field(default_factory=SelectorConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "lr", "batch_size", "distill_batch_size", "teacher_c", "inner_folds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"robot_selection.{name} must be > 0, got {getattr(self, name)}")
        for name in ("warmup_steps", "variants_per_task", "recombinations", "generic_words", "generic_phrases"):
            if getattr(self, name) < 0:
                raise ValueError(f"robot_selection.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("supervised_weight", "distill_weight", "teacher_soft_weight", "lm_weight", "init_embeddings"):
            if getattr(self, name) < 0:
                raise ValueError(f"robot_selection.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.augment_task_prob <= 1.0:
            raise ValueError(f"robot_selection.augment_task_prob must be in [0, 1], got {self.augment_task_prob}")
        if self.inner_folds < 2:
            raise ValueError(f"robot_selection.inner_folds must be >= 2, got {self.inner_folds}")
