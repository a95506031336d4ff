"""The text contract between training and the engine: special tokens, prompt, targets.

Training builds its LM targets with `format_target`; the engine builds prompts with
`format_prompt` and reads generations back with `parse_generation`. Both sides import
this module, so the format cannot drift.

Layout of one example (visual tokens are prepended as embeddings, not text):

    <image> Task: {task}\n<reasoning>   <- prompt (masked out of the LM loss)
    {reasoning}<answer>{Drone, Robot with Legs}<plan>1. {step} [Drone]\n2. ...<|endoftext|>
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ember.labels import ROBOT_DISPLAY_NAMES, ROBOT_TYPES, robot_index

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
IMAGE_TOKEN = "<image>"
REASONING_TOKEN = "<reasoning>"
ANSWER_TOKEN = "<answer>"
PLAN_TOKEN = "<plan>"
SPECIAL_TOKENS: tuple[str, ...] = (
    EOS_TOKEN,
    PAD_TOKEN,
    IMAGE_TOKEN,
    REASONING_TOKEN,
    ANSWER_TOKEN,
    PLAN_TOKEN,
)

PROMPT_TEMPLATE = IMAGE_TOKEN + " Task: {task}\n" + REASONING_TOKEN
DEFAULT_TASK = "Describe the incident and choose the robots to respond."
MAX_TASK_CHARS = 512


@dataclass(frozen=True)
class PlanStep:
    """One parsed plan step: execution order, text and the robot type id (may be '')."""

    order: int
    description: str
    robot_type: str


@dataclass(frozen=True)
class ParsedGeneration:
    """What a generated text says, split at the special tokens."""

    reasoning: str
    robot_types: list[str]
    steps: list[PlanStep]


def format_prompt(task: str) -> str:
    """The prompt the model sees for a task (task text is whitespace-normalised)."""
    return PROMPT_TEMPLATE.format(task=" ".join(task.split()))


def format_target(
    reasoning: str,
    robot_indices: list[int],
    steps: list[tuple[int, str, int]] | None = None,
) -> str:
    """LM target text: reasoning, the robot set and an optional plan, ending with EOS.

    `steps` are (execution order, description, robot index) triples.
    """
    robots = ", ".join(ROBOT_DISPLAY_NAMES[i] for i in robot_indices)
    text = f"{reasoning.strip()}{ANSWER_TOKEN}{robots}"
    if steps:
        lines = [f"{order}. {desc.strip()} [{ROBOT_DISPLAY_NAMES[r]}]" for order, desc, r in steps]
        text += PLAN_TOKEN + "\n".join(lines)
    return text + EOS_TOKEN


_STEP_RE = re.compile(r"^\s*(\d+)[.)]\s*(.*?)\s*(?:\[([^\]]*)\])?\s*$")


def parse_generation(text: str) -> ParsedGeneration:
    """Split a (possibly truncated) generation into reasoning, robot set and plan steps.

    Unknown robot names are dropped from the set; a step with an unknown robot keeps
    its text with robot_type ''. A plan after a skipped ANSWER_TOKEN is kept (the robot set is
    then empty). Never raises on model output.
    """
    text = text.replace(EOS_TOKEN, "")
    if ANSWER_TOKEN not in text and PLAN_TOKEN in text:
        text = text.replace(PLAN_TOKEN, ANSWER_TOKEN + PLAN_TOKEN, 1)
    reasoning, _, rest = text.partition(ANSWER_TOKEN)
    answer, _, plan = rest.partition(PLAN_TOKEN)
    robots: list[str] = []
    for part in answer.split(","):
        try:
            rid = ROBOT_TYPES[robot_index(part)]
        except ValueError:
            continue
        if rid not in robots:
            robots.append(rid)
    steps: list[PlanStep] = []
    for line in plan.splitlines():
        m = _STEP_RE.match(line)
        if not m or not m.group(2):
            continue
        robot = ""
        if m.group(3):
            try:
                robot = ROBOT_TYPES[robot_index(m.group(3))]
            except ValueError:
                robot = ""
        steps.append(PlanStep(int(m.group(1)), m.group(2), robot))
    return ParsedGeneration(reasoning.strip(), robots, steps)
