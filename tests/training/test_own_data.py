"""A user's own incident photos and robot tasks, as they arrive from other machines and tools:
names written on macOS (NFD) or on a case-insensitive disk, robot sets saved as JSON lists, rows
with a robot type the fleet does not have. Every row is read as meant or skipped with the row and
the field named; the robot-selection recipe reads the files by the same rules as the stages."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import cv2
import numpy as np

from ember_training.data.common import MALFORMED, MISSING_IMAGE, UNKNOWN_LABEL
from ember_training.data.incidents import load_incidents
from ember_training.data.robot_selection import load_robot_multi, load_robot_single


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((24, 32, 3), 90, np.uint8))


def _task(text: str, output) -> dict:
    return {"instruction": "", "input": f"Task: {text}", "output": output}


def test_image_names_match_across_unicode_normalisation_and_extension_case(tmp_path):
    """macOS stores 'Ü' decomposed (NFD) while the labels file holds it composed (NFC); a photo named
    'x.JPG' is 'x.jpg' on the Windows/macOS disk the labels were written on. Both are the same file,
    not a missing image; a truly missing one still is, and two files that differ only in case are
    ambiguous (missing)."""
    nfc = "Überschwemmung Keller.jpg"
    _jpeg(tmp_path / "img" / "flood" / unicodedata.normalize("NFD", nfc))
    _jpeg(tmp_path / "img" / "flood" / "keller 2.JPG")
    _jpeg(tmp_path / "img" / "twin" / "a.jpg")
    _jpeg(tmp_path / "img" / "twin" / "A.JPG")
    labels = {
        f"flood/{nfc}": {"incidents": {"flooded": 1}},
        "flood/keller 2.jpg": {"incidents": {"flooded": 1}},
        "flood/pegel.jpg": {"incidents": {"flooded": 1}},
        "twin/a.JPG": {"incidents": {"flooded": 1}},
        "Flood/keller 2.jpg": {"incidents": {"flooded": 1}},  # the folder's case differs too
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels, ensure_ascii=False), encoding="utf-8")
    samples, rep = load_incidents(tmp_path / "labels.json", tmp_path / "img")
    assert rep.skipped == {MISSING_IMAGE: 2}, rep.summary()
    assert all(Path(s.image).is_file() for s in samples)
    assert sorted(Path(s.image).name for s in samples) == sorted(
        [unicodedata.normalize("NFD", nfc), "keller 2.JPG", "keller 2.JPG"])


def test_robot_single_output_may_be_a_list(tmp_path):
    """The multi file's robot set may be a JSON list; a single file written the same way was skipped
    as malformed."""
    rows = [_task("Clear snow from the hospital entrance.", ["Robot with Wheels", "humanoid"]),
            _task("Map the fire.", "Drone")]
    (tmp_path / "single.json").write_text(json.dumps(rows))
    samples, rep = load_robot_single(tmp_path / "single.json")
    assert rep.n_skipped == 0, rep.summary()
    assert [s.robot_set for s in samples] == [(1, 2), (0,)]


def test_robot_row_skips_name_the_row_and_what_is_wrong(tmp_path):
    """'malformed row 2 e.g. 'row 3'' does not say what to fix; 'unknown label' should name the robot,
    not the whole robot list or a long error sentence."""
    rows = [_task("Map the fire.", "Drone"), _task("Weld the beam.", "Drone, Robotic Arm"),
            {"instruction": "", "input": "Task: Open the valve.", "output": 3}]
    (tmp_path / "single.json").write_text(json.dumps(rows))
    _, rep = load_robot_single(tmp_path / "single.json")
    assert rep.skipped == {UNKNOWN_LABEL: 1, MALFORMED: 1}
    text = rep.summary()
    assert "'row 1: Robotic Arm'" in text and "row 2: 'output'" in text, text

    def multi(text: str, steps: list, output="Drone") -> dict:
        row = {"instruction": "", "input": f"Task: {text}", "subtasks": steps}
        if output is not None:
            row["original_single_robot_output"] = output
        return row

    step = {"subtask": "Fly over", "assigned_robot": "Drone", "execution_order": 1}
    rows = [multi("Map the fire.", [step]),
            multi("Weld the beam.", [step, {**step, "assigned_robot": "Robotic Arm"}]),
            multi("Count cattle.", [step, {**step, "execution_order": "second"}]),
            multi("Drop a vest.", [step], output=None),
            multi("Haul debris.", [{**step, "execution_order": "2"}, step])]  # a spreadsheet's "2" is 2
    (tmp_path / "multi.json").write_text(json.dumps(rows))
    samples, rep = load_robot_multi(tmp_path / "multi.json")
    assert rep.skipped == {UNKNOWN_LABEL: 1, MALFORMED: 2}
    text = rep.summary()
    assert "'row 1: Robotic Arm'" in text and "row 2: subtask 1: 'execution_order'" in text, text
    assert [o for o, _, _ in samples[-1].steps] == [1, 2]


def test_skip_summary_names_up_to_three_different_culprits(tmp_path):
    """Four different unknown robot spellings: naming only the first made the user fix one and run
    again to find the next; the line names three different ones (a repeated one counts once)."""
    rows = [_task("Weld the beam.", "Robotic Arm"), _task("Scout the canyon.", "Drones"),
            _task("Weld the pipe.", "Robotic Arm"), _task("Move the generator.", "Wheeled Robot"),
            _task("Search the sewer.", "Drone and Robot with Wheels"), _task("Map the fire.", "Drone")]
    (tmp_path / "single.json").write_text(json.dumps(rows))
    _, rep = load_robot_single(tmp_path / "single.json")
    assert rep.skipped == {UNKNOWN_LABEL: 5}
    assert ("unknown label 5 e.g. 'row 0: Robotic Arm', 'row 1: Drones', 'row 3: Wheeled Robot', ...)"
            in rep.summary()), rep.summary()
