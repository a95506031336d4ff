"""Stage 4's LM targets on the shipped configs: every robot-selection task is trained with its plan.

The two robot-selection files hold the same 198 tasks; only the multi-robot file has the plans.
Listing both for stage 4 gave the same prompt a target without a plan half of the time, and the
demo model then wrote a plan for about half of the held-out tasks (research/robot_selection/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.prompting import ANSWER_TOKEN, EOS_TOKEN, PLAN_TOKEN
from ember_training.config import load_config
from ember_training.data.build import DataDirs, load_source
from ember_training.data.text import robot_target

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["small.yaml", "demo.yaml", "full.yaml"])
def test_every_stage4_target_has_the_answer_then_a_plan_then_eos(name, shared_data, tmp_path):
    cfg = load_config(ROOT / "config" / "train" / name)
    dirs = DataDirs(tmp_path, shared_data / "robot_selection")
    samples = [s for ds in cfg.stages.reasoning.datasets for s in load_source(ds, cfg, dirs)[0]]
    assert len(samples) >= 194  # the 198 rows less 4 duplicate rows
    for s in samples:
        target = robot_target(s.task, s.robot_set, s.steps, s.capabilities, None, None)
        head, _, plan = target.partition(PLAN_TOKEN)
        assert ANSWER_TOKEN in head and plan.endswith(EOS_TOKEN), f"{s.uid}: {target!r}"
        assert len(plan.splitlines()) == len(s.steps) >= 1


def test_a_plan_survives_a_skipped_answer_token():
    """The demo model sometimes runs its reasoning straight into `<plan>` without `<answer>`; the
    plan it wrote is still the robots' plan (their robot set comes from the heads/selector)."""
    from ember.prompting import parse_generation

    text = f"Robot with Legs fits: rough terrain, Robot with Legs{PLAN_TOKEN}1. Scout [Robot with Legs]\n2. Carry [Humanoid]{EOS_TOKEN}"
    parsed = parse_generation(text)
    assert [(s.order, s.description, s.robot_type) for s in parsed.steps] == [(1, "Scout", "legged"), (2, "Carry", "humanoid")]
    assert parsed.robot_types == [] and parsed.reasoning == "Robot with Legs fits: rough terrain, Robot with Legs"
    # with both tokens nothing changes
    full = parse_generation(f"why{ANSWER_TOKEN}Drone{PLAN_TOKEN}1. Fly [Drone]")
    assert full.reasoning == "why" and full.robot_types == ["drone"] and len(full.steps) == 1
