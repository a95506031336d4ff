"""Exact duplicate rows (a line doubled by a copy-paste or a merge of two exports) count once: the
copy is skipped and named in the loader's summary line, like the other skip reasons."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ember_training.data.captions import load_coco_captions, load_flickr30k
from ember_training.data.common import DUPLICATE
from ember_training.data.incidents import load_incidents
from ember_training.data.instruct import load_llava, load_vqa
from ember_training.data.robot_selection import load_robot_multi, load_robot_single


def _images(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        assert cv2.imwrite(str(folder / name), np.full((16, 16, 3), 40 * k, np.uint8))
    return folder


def test_doubled_csv_line_counts_once(tmp_path: Path) -> None:
    _images(tmp_path / "img", "a.jpg", "b.jpg")
    lines = ["image_name| comment_number| comment", "a.jpg| 0| A flooded street.", "a.jpg| 1| Water on a road.",
             "b.jpg| 0| A fire.", "a.jpg| 0| A flooded street."]  # the last line doubles the first row
    (tmp_path / "results.csv").write_text("\n".join(lines) + "\n")
    samples, rep = load_flickr30k(tmp_path / "results.csv", tmp_path / "img")
    assert len(samples) == 3 and rep.rows == 4 and dict(rep.skipped) == {DUPLICATE: 1}
    assert "duplicate row 1 e.g." in rep.summary() and "a.jpg#0" in rep.summary()


def test_doubled_json_rows_count_once_in_every_list_format(tmp_path: Path) -> None:
    img = _images(tmp_path / "img", "a.jpg", "COCO_train2014_000000000001.jpg")
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"id": 5, "image_id": 1, "caption": "A fire."}, {"id": 6, "image_id": 1, "caption": "Smoke."},
                            {"id": 5, "image_id": 1, "caption": "A fire."}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    samples, rep = load_coco_captions(tmp_path / "coco.json", img)
    assert len(samples) == 2 and dict(rep.skipped) == {DUPLICATE: 1}

    conv = {"id": "c1", "image": "a.jpg", "conversations": [{"from": "human", "value": "What?"},
                                                            {"from": "gpt", "value": "A fire."}]}
    (tmp_path / "llava.json").write_text(json.dumps([conv, conv]))
    samples, rep = load_llava(tmp_path / "llava.json", img)
    assert len(samples) == 1 and dict(rep.skipped) == {DUPLICATE: 1}

    q = {"question_id": 7, "image_id": 1, "question": "Is it burning?"}
    (tmp_path / "q.json").write_text(json.dumps({"questions": [q, q], "data_subtype": "train2014"}))
    (tmp_path / "a.json").write_text(json.dumps({"annotations": [{"question_id": 7, "multiple_choice_answer": "yes"}]}))
    samples, rep = load_vqa(tmp_path / "q.json", tmp_path / "a.json", img)
    assert len(samples) == 1 and dict(rep.skipped) == {DUPLICATE: 1}

    row = {"instruction": "", "input": "Task: Fly over the fire.", "output": "Drone"}
    other = {**row, "output": "Drone, Humanoid"}  # same task, other answer: not a duplicate
    (tmp_path / "single.json").write_text(json.dumps([row, other, row]))
    samples, rep = load_robot_single(tmp_path / "single.json")
    assert [s.robot_set for s in samples] == [(0,), (0, 1)] and dict(rep.skipped) == {DUPLICATE: 1}

    multi = {"input": "Task: Fly.", "original_single_robot_output": "Drone",
             "subtasks": [{"subtask": "Fly", "assigned_robot": "Drone", "execution_order": 1}]}
    (tmp_path / "multi.json").write_text(json.dumps([multi, multi]))
    samples, rep = load_robot_multi(tmp_path / "multi.json")
    assert len(samples) == 1 and dict(rep.skipped) == {DUPLICATE: 1}


def test_doubled_incidents_entry_counts_once(tmp_path: Path) -> None:
    """Incidents1M is one JSON object: a doubled line repeats a key. An exact repeat is a skipped duplicate
    (JSON keeps one value silently); a repeat with other labels is a second row, as in the list formats."""
    img = _images(tmp_path / "img", "a.jpg", "b.jpg")
    a = '"a.jpg": {"incidents": {"on fire": 1}, "places": {"street": 1}}'
    b = '"b.jpg": {"incidents": {"flooded": 1}}'
    b2 = '"b.jpg": {"incidents": {"flooded": 0, "fog": 1}}'
    (tmp_path / "inc.json").write_text("{\n" + ",\n".join([a, b, a, b2]) + "\n}")
    samples, rep = load_incidents(tmp_path / "inc.json", img)
    assert rep.rows == 4 and dict(rep.skipped) == {DUPLICATE: 1} and "'a.jpg'" in rep.summary()
    assert [s.uid for s in samples] == ["incidents/a.jpg", "incidents/b.jpg", "incidents/b.jpg"]


def test_the_public_robot_files_have_four_doubled_rows(shared_data: Path) -> None:
    """The robot-selection dataset itself repeats 4 rows verbatim in each file: they are trained on once."""
    for load, name in ((load_robot_single, "single_robot_selection.json"),
                       (load_robot_multi, "multi_robot_selection_dataset.json")):
        samples, rep = load(shared_data / "robot_selection" / name)
        assert (rep.rows, len(samples), dict(rep.skipped)) == (198, 194, {DUPLICATE: 4}), rep.summary()
