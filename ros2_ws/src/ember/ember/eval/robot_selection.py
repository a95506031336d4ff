"""Robot selection on the robot-selection JSON format, with the engine of a bundle.

Files (the public dataset's two formats, detected per file):

* single: `[{"instruction", "input": "Task: ...", "output": "Drone, Robot with Legs"}]`
* multi:  `[{"instruction", "input", "subtasks": [...], "original_single_robot_output": ...}]`
  (the gold set is `original_single_robot_output`, a comma-separated string or a list).

The engine always analyses a camera frame with the task (robots do); rows are text-only, so
row i is paired with frame i mod len(frames): the images of `--images DIR`, or the built-in
neutral scenes of `ember.eval.scenes`. The report names which.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ember.eval.metrics import robot_selection_metrics
from ember.fsutil import decode_text
from ember.labels import ROBOT_TYPES, robot_index

_TASK_PREFIX = re.compile(r"^\s*task\s*:\s*", re.IGNORECASE)
MAX_LISTED = 10


class DataError(ValueError):
    """A robot-selection file that cannot be evaluated as a whole (empty, malformed, unknown robots)."""


@dataclass(frozen=True)
class Row:
    """One task: its text, gold robot indices (sorted) and position in the file."""

    index: int
    task: str
    gold: tuple[int, ...]


def _gold(value: object) -> list[str]:
    if isinstance(value, str):
        return [p for p in (s.strip() for s in value.split(",")) if p]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise TypeError(f"robot set must be a string or a list of strings, not {type(value).__name__}")


def load_rows(path: str | Path, skipped: list[str] | None = None) -> tuple[str, list[Row]]:
    """(format 'single'|'multi', rows) of a robot-selection file; DataError names every bad row, unless
    `skipped` is given: then each bad row's problem is appended to it and the row left out (as ember-train
    does), and only a file with no usable row at all is an error."""
    path = Path(path)
    try:
        text = decode_text(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {path} is not UTF-8 text: {exc}") from None
    if not text.strip():
        raise DataError(f"data file {path} is empty")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"data file {path} is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise DataError(f"data file {path} must hold a JSON list of rows, not a {type(data).__name__}")
    if not data:
        raise DataError(f"data file {path} holds no rows")
    fmt = "multi" if isinstance(data[0], dict) and "subtasks" in data[0] else "single"
    key = "original_single_robot_output" if fmt == "multi" else "output"
    rows: list[Row] = []
    problems: list[str] = []
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            problems.append(f"row {i}: not an object")
            continue
        task = row.get("input")
        if not isinstance(task, str) or not _TASK_PREFIX.sub("", task).strip():
            problems.append(f"row {i}: no task text in 'input'")
            continue
        if key not in row:
            problems.append(f"row {i}: no '{key}' (the gold robot set)")
            continue
        try:
            names = _gold(row[key])
            if not names:
                raise ValueError("empty robot set")
            gold = tuple(sorted({robot_index(n) for n in names}))
        except (TypeError, ValueError) as exc:
            problems.append(f"row {i}: {exc}")
            continue
        rows.append(Row(i, " ".join(_TASK_PREFIX.sub("", task).split()), gold))
    if problems and (skipped is None or not rows):
        none = "; no usable rows" if skipped is not None else ""
        raise DataError(f"data file {path} ({fmt} format): {len(problems)} of {len(data)} rows are bad{none}: "
                        f"{listed(problems)}")
    if skipped is not None:
        skipped.extend(problems)
    return fmt, rows


def listed(problems: Sequence[str]) -> str:
    """The first MAX_LISTED problems, `; `-separated, and how many more."""
    more = len(problems) - MAX_LISTED
    return "; ".join(problems[:MAX_LISTED]) + (f"; ... {more} more" if more > 0 else "")


@dataclass
class Predictions:
    """Per-row predicted sets (best first) and scores [N, 5]."""

    sets: list[list[int]]
    scores: np.ndarray


def predict(engine, rows: Sequence[Row], frames: Sequence[np.ndarray], max_new_tokens: int = 0) -> Predictions:
    """Run the engine on every row (paired with frame i mod len(frames)).

    Robot selection comes from the heads (prefill), so no text needs generating by default.
    """
    if not frames:
        raise ValueError("at least one frame is needed to pair tasks with")
    sets, scores = [], []
    for i, row in enumerate(rows):
        a = engine.analyze(frames[i % len(frames)], task=row.task, max_new_tokens=max_new_tokens)
        sets.append([ROBOT_TYPES.index(r) for r in a.robot_types])
        scores.append(a.robot_scores)
    return Predictions(sets, np.asarray(scores, dtype=np.float64).reshape(len(rows), len(ROBOT_TYPES)))


def evaluate(engine, rows: Sequence[Row], frames: Sequence[np.ndarray], max_new_tokens: int = 0) -> tuple[dict, Predictions]:
    """Metrics (ember.eval.metrics.robot_selection_metrics) of the engine on `rows`."""
    pred = predict(engine, rows, frames, max_new_tokens)
    return robot_selection_metrics([r.gold for r in rows], pred.sets, scores=pred.scores), pred


def per_row(rows: Sequence[Row], pred: Predictions) -> list[dict]:
    """JSON rows: task, gold and predicted robot ids, scores."""
    return [
        {
            "index": r.index,
            "task": r.task,
            "gold": [ROBOT_TYPES[i] for i in r.gold],
            "pred": [ROBOT_TYPES[i] for i in s],
            "scores": [round(float(x), 6) for x in sc],
            "exact": sorted(s) == list(r.gold),
        }
        for r, s, sc in zip(rows, pred.sets, pred.scores, strict=True)
    ]


def format_table(metrics: dict) -> str:
    """The printed summary: headline metrics, then per-robot precision / recall / F1."""

    def f(v: float | None) -> str:
        return "  -  " if v is None else f"{v:.3f}"

    lines = [
        f"n={metrics['n']}  exact_match={f(metrics['exact_match'])}  jaccard={f(metrics['jaccard'])}  "
        f"top1_hit={f(metrics['top1_hit'])}  micro_f1={f(metrics['micro_f1'])}  macro_f1={f(metrics['macro_f1'])}",
        "",
        f"{'robot':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}{'predicted':>11}",
    ]
    for rid, v in metrics["per_robot"].items():
        lines.append(f"{rid:<12}{f(v['precision']):>10}{f(v['recall']):>10}{f(v['f1']):>10}{v['support']:>9}{v['predicted']:>11}")
    return "\n".join(lines)
