"""Robot-selection loaders: the single-robot JSON (robot sets) and the multi-robot JSON (plans).

single: [{instruction, input: "Task: ...", output: "Drone, Robot with Legs"}]
multi:  [{instruction, input, subtasks: [{subtask, assigned_robot, execution_order}],
          original_single_robot_output}]

Rows carry no image. They are text-only by nature and are paired with a labelled incident
scene when batched (ember_training.data.dataset documents how); the robot labels come from
the task text only.
"""

from __future__ import annotations

import re
from pathlib import Path

from ember.labels import NUM_ROBOT_TYPES, parse_robot_set, robot_index

from .common import (
    MALFORMED,
    UNKNOWN_LABEL,
    DataError,
    LoadReport,
    Sample,
    clean_text,
    one_hot_set,
    read_json,
)

_TASK_PREFIX = re.compile(r"^\s*task\s*:\s*", re.IGNORECASE)
_BLOCK = re.compile(r"^(?P<name>[^:\n]+):\s*$", re.MULTILINE)


def parse_capabilities(instruction: str) -> dict[int, list[str]]:
    """Capability and environment phrases per robot index from the dataset's capability sheet."""
    out: dict[int, list[str]] = {}
    heads = list(_BLOCK.finditer(instruction))
    for k, m in enumerate(heads):
        try:
            idx = robot_index(m.group("name"))
        except ValueError:
            continue
        body = instruction[m.end(): heads[k + 1].start() if k + 1 < len(heads) else len(instruction)]
        phrases: list[str] = []
        for line in body.splitlines():
            key, _, values = line.partition(":")
            if key.strip().lower() in ("capabilities", "environments"):
                phrases += [p.strip() for p in values.split(",") if p.strip()]
        out[idx] = phrases
    return out


def _task(row: dict) -> str | None:
    text = clean_text(row.get("input"))
    if text is None:
        return None
    return clean_text(_TASK_PREFIX.sub("", text))


def load_robot_single(path: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """Single-robot rows: the robot set is a complete multi-label target (absent robots are 0)."""
    report = LoadReport("robot_single")
    data = read_json(path, "robot_single")
    if not isinstance(data, list):
        raise DataError(f"robot_single: {path} is not a list of rows")
    samples: list[Sample] = []
    for i, row in enumerate(data):
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate(row, f"row {i}"):
            continue
        task = _task(row) if isinstance(row, dict) else None
        output = row.get("output") if isinstance(row, dict) else None
        if task is None or not isinstance(output, str):
            report.skip(MALFORMED, f"row {i}")
            continue
        try:
            robots = tuple(parse_robot_set(output))
        except ValueError:
            report.skip(UNKNOWN_LABEL, output)
            continue
        caps = parse_capabilities(row.get("instruction") or "") if isinstance(row.get("instruction"), str) else {}
        samples.append(
            Sample(uid=f"robot_single/{i}", source="robot_single", image=None, task=task,
                   robots=one_hot_set(robots, NUM_ROBOT_TYPES), robot_set=robots, capabilities=caps)
        )
    report.kept = len(samples)
    return samples, report.emit()


def load_robot_multi(path: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """Multi-robot rows: the answer is the task's robot set, the plan its subtasks by execution order."""
    report = LoadReport("robot_multi")
    data = read_json(path, "robot_multi")
    if not isinstance(data, list):
        raise DataError(f"robot_multi: {path} is not a list of rows")
    samples: list[Sample] = []
    for i, row in enumerate(data):
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate(row, f"row {i}"):
            continue
        task = _task(row) if isinstance(row, dict) else None
        subtasks = row.get("subtasks") if isinstance(row, dict) else None
        output = row.get("original_single_robot_output") if isinstance(row, dict) else None
        if isinstance(output, list) and output and all(isinstance(o, str) for o in output):
            output = ", ".join(output)  # some rows list the set instead of a comma-separated string
        if task is None or not isinstance(subtasks, list) or not subtasks or not isinstance(output, str):
            report.skip(MALFORMED, f"row {i}")
            continue
        try:
            robots = tuple(parse_robot_set(output))
            steps = _steps(subtasks)
        except ValueError as e:
            report.skip(UNKNOWN_LABEL, e)
            continue
        except (TypeError, KeyError):
            report.skip(MALFORMED, f"row {i}")
            continue
        caps = parse_capabilities(row.get("instruction") or "") if isinstance(row.get("instruction"), str) else {}
        samples.append(
            Sample(uid=f"robot_multi/{i}", source="robot_multi", image=None, task=task,
                   robots=one_hot_set(robots, NUM_ROBOT_TYPES), robot_set=robots, steps=steps, capabilities=caps)
        )
    report.kept = len(samples)
    return samples, report.emit()


def _steps(subtasks: list) -> tuple[tuple[int, str, int], ...]:
    """(execution order, description, robot index) sorted by order (stable: parallel steps keep
    their listed order). TypeError/KeyError for malformed entries, ValueError for unknown robots."""
    steps = []
    for s in subtasks:
        order = s["execution_order"]
        desc = clean_text(s["subtask"])
        robot = s["assigned_robot"]
        if isinstance(order, bool) or not isinstance(order, int) or desc is None or not isinstance(robot, str):
            raise TypeError("bad subtask")
        steps.append((order, desc, robot_index(robot)))
    return tuple(sorted(steps, key=lambda s: s[0]))

