"""Robot-selection loaders: the single-robot JSON (robot sets) and the multi-robot JSON (plans).

single: [{instruction, input: "Task: ...", output: "Drone, Robot with Legs" or ["Drone", ...]}]
multi:  [{instruction, input, subtasks: [{subtask, assigned_robot, execution_order}],
          original_single_robot_output}]

Rows carry no image. They are text-only by nature and are paired with a labelled incident
scene when batched (ember_training.data.dataset documents how); the robot labels come from
the task text only.
"""

from __future__ import annotations

import re
from pathlib import Path

from ember.labels import NUM_ROBOT_TYPES, robot_index

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


class RowError(ValueError):
    """A robot-selection row that is skipped: the skip reason and what to show for it ('row 3: ...')."""

    def __init__(self, reason: str, culprit: str, key: str | None = None) -> None:
        super().__init__(culprit)
        self.reason, self.culprit, self.key = reason, culprit, key  # key: the unknown name (shown once)


def _task(row: dict, i: int) -> str:
    text = clean_text(row.get("input"))
    task = clean_text(_TASK_PREFIX.sub("", text)) if text is not None else None
    if task is None:
        raise RowError(MALFORMED, f"row {i}: no task text in 'input'")
    return task


def _robot_set(value: object, i: int, name: str) -> tuple[int, ...]:
    """Sorted robot indices of a set written as "Drone, Robot with Legs" or ["Drone", "Robot with Legs"]."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = ", ".join(value)
    if value is None:
        raise RowError(MALFORMED, f"row {i}: no {name!r}")
    if not isinstance(value, str):
        raise RowError(MALFORMED, f"row {i}: {name!r} is not a robot list ({value!r})")
    parts = [p for p in (v.strip() for v in value.split(",")) if p]
    if not parts:
        raise RowError(MALFORMED, f"row {i}: {name!r} names no robot")
    indices = set()
    for part in parts:
        try:
            indices.add(robot_index(part))
        except ValueError:  # not one of the fleet's types (or another spelling)
            raise RowError(UNKNOWN_LABEL, f"row {i}: {part}", part) from None
    return tuple(sorted(indices))


def _capabilities(row: dict) -> dict[int, list[str]]:
    instruction = row.get("instruction")
    return parse_capabilities(instruction) if isinstance(instruction, str) else {}


def _steps(subtasks: object, i: int) -> tuple[tuple[int, str, int], ...]:
    """(execution order, description, robot index) sorted by order (stable: parallel steps keep
    their listed order)."""
    if not isinstance(subtasks, list) or not subtasks:
        raise RowError(MALFORMED, f"row {i}: no 'subtasks' list")
    steps = []
    for k, s in enumerate(subtasks):
        where = f"row {i}: subtask {k}"
        if not isinstance(s, dict):
            raise RowError(MALFORMED, f"{where} is not an object")
        order, desc, robot = s.get("execution_order"), clean_text(s.get("subtask")), s.get("assigned_robot")
        if isinstance(order, str) and order.strip().isdigit():  # a spreadsheet export's "2"
            order = int(order)
        if isinstance(order, bool) or not isinstance(order, int):
            raise RowError(MALFORMED, f"{where}: 'execution_order' is not an integer ({order!r})")
        if desc is None:
            raise RowError(MALFORMED, f"{where}: no 'subtask' text")
        if not isinstance(robot, str):
            raise RowError(MALFORMED, f"{where}: 'assigned_robot' is not a robot name ({robot!r})")
        try:
            steps.append((order, desc, robot_index(robot)))
        except ValueError:
            raise RowError(UNKNOWN_LABEL, f"row {i}: {robot}", robot) from None
    return tuple(sorted(steps, key=lambda s: s[0]))


def parse_single_row(row: object, i: int) -> tuple[str, tuple[int, ...], dict[int, list[str]]]:
    """(task, robot set, capabilities) of single-file row `i`; RowError when it is skipped."""
    if not isinstance(row, dict):
        raise RowError(MALFORMED, f"row {i}: not an object")
    return _task(row, i), _robot_set(row.get("output"), i, "output"), _capabilities(row)


def parse_multi_row(row: object, i: int) -> tuple[str, tuple[int, ...], tuple[tuple[int, str, int], ...], dict]:
    """(task, robot set, plan steps, capabilities) of multi-file row `i`; RowError when it is skipped."""
    if not isinstance(row, dict):
        raise RowError(MALFORMED, f"row {i}: not an object")
    task = _task(row, i)
    steps = _steps(row.get("subtasks"), i)
    robots = _robot_set(row.get("original_single_robot_output"), i, "original_single_robot_output")
    return task, robots, steps, _capabilities(row)


def read_rows(path: Path, name: str) -> list:
    """The rows of a robot-selection JSON file (read_json's encodings); DataError if it is not a list."""
    data = read_json(path, name)
    if not isinstance(data, list):
        raise DataError(f"{name}: {path} is not a list of rows")
    return data


def load_robot_single(path: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """Single-robot rows: the robot set is a complete multi-label target (absent robots are 0)."""
    report = LoadReport("robot_single")
    samples: list[Sample] = []
    for i, row in enumerate(read_rows(path, "robot_single")):
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate(row, f"row {i}"):
            continue
        try:
            task, robots, caps = parse_single_row(row, i)
        except RowError as e:
            report.skip(e.reason, e.culprit, e.key)
            continue
        samples.append(
            Sample(uid=f"robot_single/{i}", source="robot_single", image=None, task=task,
                   robots=one_hot_set(robots, NUM_ROBOT_TYPES), robot_set=robots, capabilities=caps)
        )
    report.kept = len(samples)
    return samples, report.emit()


def load_robot_multi(path: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """Multi-robot rows: the answer is the task's robot set, the plan its subtasks by execution order."""
    report = LoadReport("robot_multi")
    samples: list[Sample] = []
    for i, row in enumerate(read_rows(path, "robot_multi")):
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate(row, f"row {i}"):
            continue
        try:
            task, robots, steps, caps = parse_multi_row(row, i)
        except RowError as e:
            report.skip(e.reason, e.culprit, e.key)
            continue
        samples.append(
            Sample(uid=f"robot_multi/{i}", source="robot_multi", image=None, task=task,
                   robots=one_hot_set(robots, NUM_ROBOT_TYPES), robot_set=robots, steps=steps, capabilities=caps)
        )
    report.kept = len(samples)
    return samples, report.emit()
