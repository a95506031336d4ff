"""The robot-selection tasks joined across the dataset's two files.

`single_robot_selection.json` gives the task and its robot set; `multi_robot_selection_dataset.json`
gives the same tasks (same row order) with a 4-step multi-robot plan. Either file may be named;
the other is looked up beside it. Rows are joined by position and checked by normalised text.
Rows are read by the stages' rules (ember_training.data.robot_selection: encodings, robot names,
skipped rows with one summary line per file); a task whose plan row is skipped keeps no plan.
Unlike the stages, exact duplicate rows are kept (the CV's folds group them by text).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.common import LoadReport
from ..data.robot_selection import RowError, parse_multi_row, parse_single_row, read_rows
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


def resolve_files(path: str | Path) -> tuple[Path | None, Path | None]:
    """(single file, multi file) for a data path: either file, or the directory holding them."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    single, multi = folder / SINGLE_FILE, folder / MULTI_FILE
    if path.is_file():
        data = read_rows(path, path.name)
        is_multi = bool(data) and isinstance(data[0], dict) and "subtasks" in data[0]
        if is_multi:
            multi = path
        else:
            single = path
    return (single if single.is_file() else None), (multi if multi.is_file() else None)


def _parse_all(rows: list, parse: Callable[[Any, int], tuple], name: str) -> list[tuple | None]:
    """Each row parsed, or None where it is skipped; one summary line for the file."""
    report = LoadReport(name)
    out: list[tuple | None] = []
    for i, row in enumerate(rows):
        report.rows += 1
        try:
            out.append(parse(row, i))
        except RowError as e:
            report.skip(e.reason, e.culprit, e.key)
            out.append(None)
    report.kept = sum(p is not None for p in out)
    report.emit()
    return out


def load_tasks(path: str | Path) -> list[RobotTask]:
    """All tasks of the dataset at `path` (a file of either kind or their directory); `index` is the
    task's row position in its file (skipped rows leave gaps)."""
    single, multi = resolve_files(path)
    if single is None and multi is None:
        raise FileNotFoundError(f"no robot-selection data at {path}")
    srows = read_rows(single, SINGLE_FILE) if single else None
    mrows = read_rows(multi, MULTI_FILE) if multi else None
    plans = _parse_all(mrows, parse_multi_row, f"tasks {MULTI_FILE}") if mrows is not None else None
    if srows is None:
        return [RobotTask(i, p[0], p[1], p[2], str(row.get("instruction", "")))
                for i, (row, p) in enumerate(zip(mrows, plans, strict=True)) if p is not None]
    parsed = _parse_all(srows, parse_single_row, f"tasks {SINGLE_FILE}")
    if plans is not None:
        joinable = len(srows) == len(mrows) and all(
            normalize_task(a[0]) == normalize_task(b[0]) for a, b in zip(parsed, plans, strict=True) if a and b)
        if not joinable:  # join by text instead of position
            by_text = {normalize_task(b[0]): b for b in plans if b is not None}
            plans = [by_text.get(normalize_task(a[0])) if a is not None else None for a in parsed]
    tasks = []
    for i, (row, p) in enumerate(zip(srows, parsed, strict=True)):
        if p is None:
            continue
        plan = plans[i] if plans is not None else None
        tasks.append(RobotTask(i, p[0], p[1], plan[2] if plan else (), str(row.get("instruction", ""))))
    return tasks
