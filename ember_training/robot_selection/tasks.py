"""The robot-selection tasks joined across the dataset's two files.

`single_robot_selection.json` gives the task and its robot set; `multi_robot_selection_dataset.json`
gives the same tasks (same row order) with a 4-step multi-robot plan. Either file may be named;
the other is looked up beside it. Rows are joined by position and checked by normalised text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ember.labels import parse_robot_set, robot_index

from .folds import normalize_task

SINGLE_FILE = "single_robot_selection.json"
MULTI_FILE = "multi_robot_selection_dataset.json"


@dataclass(frozen=True)
class RobotTask:
    """One task: text (without 'Task:'), the robot set (sorted indices) and the reference plan."""

    index: int
    task: str
    robots: tuple[int, ...]
    steps: tuple[tuple[int, str, int], ...] = ()  # (execution order, subtask, robot index), by order
    instruction: str = ""


def _task_text(row: dict) -> str:
    text = " ".join(str(row.get("input", "")).split())
    return text[5:].strip() if text.lower().startswith("task:") else text


def _output(value) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def _steps(subtasks: list) -> tuple[tuple[int, str, int], ...]:
    steps = [(int(s["execution_order"]), " ".join(str(s["subtask"]).split()), robot_index(s["assigned_robot"]))
             for s in subtasks]
    return tuple(sorted(steps, key=lambda s: s[0]))


def resolve_files(path: str | Path) -> tuple[Path | None, Path | None]:
    """(single file, multi file) for a data path: either file, or the directory holding them."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    single, multi = folder / SINGLE_FILE, folder / MULTI_FILE
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        is_multi = bool(data) and isinstance(data[0], dict) and "subtasks" in data[0]
        if is_multi:
            multi = path
        else:
            single = path
    return (single if single.is_file() else None), (multi if multi.is_file() else None)


def load_tasks(path: str | Path) -> list[RobotTask]:
    """All tasks of the dataset at `path` (a file of either kind or their directory)."""
    single, multi = resolve_files(path)
    if single is None and multi is None:
        raise FileNotFoundError(f"no robot-selection data at {path}")
    srows = json.loads(single.read_text(encoding="utf-8")) if single else None
    mrows = json.loads(multi.read_text(encoding="utf-8")) if multi else None
    if srows is not None and mrows is not None:
        joinable = len(srows) == len(mrows) and all(
            normalize_task(_task_text(a)) == normalize_task(_task_text(b)) for a, b in zip(srows, mrows, strict=False)
        )
        if not joinable:  # join by text instead of position
            by_text = {normalize_task(_task_text(b)): b for b in mrows}
            mrows = [by_text.get(normalize_task(_task_text(a))) for a in srows]
    tasks = []
    rows = srows if srows is not None else mrows
    for i, row in enumerate(rows):
        mrow = mrows[i] if mrows is not None else None
        out = row["output"] if srows is not None else mrow["original_single_robot_output"]
        steps = _steps(mrow["subtasks"]) if mrow and mrow.get("subtasks") else ()
        tasks.append(RobotTask(i, _task_text(row), tuple(parse_robot_set(_output(out))), steps,
                               str(row.get("instruction", ""))))
    return tasks
