"""The recipe's task reader (`load_tasks`, after stage 4 of small/demo/full.yaml, and the CV) on a
user's own robot files: the rows the stages skip are skipped here too, with the loaders' summary
line, instead of a traceback once the four stages are done."""

from __future__ import annotations

import json
import logging

from ember_training.data.robot_selection import load_robot_single
from ember_training.robot_selection.cv import write_split
from ember_training.robot_selection.tasks import MULTI_FILE, SINGLE_FILE, load_tasks


def _single(text: str, output) -> dict:
    return {"instruction": "", "input": f"Task: {text}", "output": output}


def _multi(text: str, robots: list[str], output) -> dict:
    steps = [{"subtask": f"step {k}", "assigned_robot": r, "execution_order": k + 1} for k, r in enumerate(robots)]
    return {"instruction": "", "input": f"Task: {text}", "subtasks": steps, "original_single_robot_output": output}


def test_load_tasks_skips_the_rows_the_stages_skip(tmp_path, caplog):
    single = [_single("Map the forest fire.", "Drone"),
              _single("Weld the beam.", "Robotic Arm"),                # a type the fleet lacks
              _single("Clear the snow.", ["Robot with Wheels", "Humanoid"]),
              {"instruction": "", "output": "Drone"},                    # no task
              _single("Inspect the hull.", "Underwater Robot")]
    multi = [_multi("Map the forest fire.", ["Drone"], "Drone"),
             _multi("Weld the beam.", ["Robotic Arm"], "Robotic Arm"),
             _multi("Clear the snow.", ["Robot with Wheels", "Jetpack"], ["Robot with Wheels", "Humanoid"]),
             _multi("Inspect the hull.", ["Underwater Robot"], "Underwater Robot")]
    # Notepad's UTF-8 BOM, as the stages accept it
    (tmp_path / SINGLE_FILE).write_text("\ufeff" + json.dumps(single), encoding="utf-8")
    (tmp_path / MULTI_FILE).write_text(json.dumps(multi), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="ember_training"):
        tasks = load_tasks(tmp_path)
    assert [(t.task, t.robots) for t in tasks] == [
        ("Map the forest fire.", (0,)), ("Clear the snow.", (1, 2)), ("Inspect the hull.", (4,))]
    assert len(tasks) == len(load_robot_single(tmp_path / SINGLE_FILE)[0])
    assert [len(t.steps) for t in tasks] == [1, 0, 1]  # the snow task's plan names a robot we lack
    assert [t.index for t in tasks] == [0, 2, 4]  # row positions: the CV copies rows by them
    text = caplog.text
    assert "tasks single_robot_selection.json: 3 samples from 5 rows" in text and "'row 1: Robotic Arm'" in text, text
    # the CV's fold files: the two files list other rows (4 plans for 5 tasks), so the plans go by task
    # text, not by position (a position copy crashed, or gave a fold another fold's plans)
    keep = [tasks[0], tasks[2]]
    write_split(tmp_path / SINGLE_FILE, [t.index for t in keep], tmp_path / "split")
    got = load_tasks(tmp_path / "split")
    assert [(t.task, t.steps) for t in got] == [(t.task, t.steps) for t in keep]
    plans = json.loads((tmp_path / "split" / MULTI_FILE).read_text())
    assert [r["input"] for r in plans] == ["Task: Map the forest fire.", "Task: Inspect the hull."]
