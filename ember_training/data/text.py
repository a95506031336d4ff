"""Text made from labels: scene descriptions and the chain-of-thought of robot-selection targets.

Everything here is derived from annotations (incident/place labels, the dataset's capability
sheet, the robot set); nothing adds a fact the labels do not state.
"""

from __future__ import annotations

import re

import numpy as np

from ember.labels import INCIDENT_LABELS, PLACE_LABELS, ROBOT_DISPLAY_NAMES
from ember.prompting import format_target

_WORD = re.compile(r"[a-z]+")


def positives(vec: np.ndarray | None, names: tuple[str, ...]) -> list[str]:
    """Names of the positive (1) entries of a label vector, in label order."""
    if vec is None:
        return []
    return [names[i] for i in np.flatnonzero(vec == 1)]


def describe_scene(incidents: np.ndarray | None, places: np.ndarray | None) -> str:
    """'on fire and with smoke at a building facade' / 'no incident at a beach'."""
    inc = positives(incidents, INCIDENT_LABELS)
    plc = positives(places, PLACE_LABELS)
    what = " and ".join(inc) if inc else "no incident"
    return f"{what} at a {plc[0]}" if plc else what


def _stems(text: str) -> set[str]:
    return {w[:5] for w in _WORD.findall(text.lower()) if len(w) > 2}


def relevant_phrases(task: str, phrases: list[str], k: int = 2) -> list[str]:
    """Up to k capability phrases sharing a word stem with the task (else the first k)."""
    stems = _stems(task)
    hits = [p for p in phrases if _stems(p) & stems]
    return (hits or phrases)[:k]


def robot_reasoning(
    task: str,
    robot_set: tuple[int, ...],
    capabilities: dict[int, list[str]],
    incidents: np.ndarray | None,
    places: np.ndarray | None,
) -> str:
    """Chain of thought: what the (paired) image shows, then why each chosen robot fits the task."""
    parts = [f"I see {describe_scene(incidents, places)}."]
    for r in robot_set:
        phrases = relevant_phrases(task, capabilities.get(r, []))
        reason = f": {', '.join(phrases)}" if phrases else ""
        parts.append(f"{ROBOT_DISPLAY_NAMES[r]} fits{reason}.")
    return " ".join(parts)


def robot_target(
    task: str,
    robot_set: tuple[int, ...],
    steps: tuple[tuple[int, str, int], ...],
    capabilities: dict[int, list[str]],
    incidents: np.ndarray | None,
    places: np.ndarray | None,
) -> str:
    """The full stage-4 LM target via ember.prompting.format_target."""
    reasoning = robot_reasoning(task, robot_set, capabilities, incidents, places)
    return format_target(reasoning, list(robot_set), list(steps) or None)
