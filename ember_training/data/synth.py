"""`ember-data synth`: small datasets in every real format, made from drawn incident scenes.

Writes, under one directory, the layout `DataPaths` expects:

    incidents/multi_label_train.json + incidents/images/<class>/<hash>.jpg   (Incidents1M)
    coco/annotations/captions_train2017.json + coco/train2017/*.jpg          (COCO captions)
    flickr30k/results.csv + flickr30k/flickr30k_images/*.jpg                 (Flickr30k)
    llava/llava_instruct_150k.json  (images in coco/train2017)               (LLaVA-Instruct)
    vqa/v2_OpenEnded_mscoco_train2014_questions.json, vqa/v2_mscoco_train2014_annotations.json
        + coco/train2014/COCO_train2014_*.jpg                                 (VQA v2)
    robot_selection/single_robot_selection.json, multi_robot_selection_dataset.json

Captions, questions and answers are made from each scene's labels; the labels are carried by
what is drawn (ember_training.data.scenes), never by text in the image. `bad_rows` adds that
many rows of each kind of defect (missing image, unknown label, malformed) to every file, for
the loaders' tests.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ember.labels import PLACE_LABELS, ROBOT_DISPLAY_NAMES

from ..config import SynthConfig
from .scenes import RECIPES, Recipe, draw_scene

_RECIPE_LABELS = sorted({name for r in RECIPES for name in r.incidents})
_NEVER_NEGATIVE = {"damaged"}  # too close to other incidents to be an honest negative

_PHRASE = {
    "on fire": "fire", "with smoke": "smoke", "wildfire": "a wildfire", "flooded": "flood water",
    "collapsed": "a collapsed building", "damaged": "damage", "earthquake": "earthquake damage",
    "car accident": "a car crash", "traffic jam": "a traffic jam", "snow covered": "snow",
    "ship boat accident": "a wrecked ship", "oil spill": "an oil spill", "landslide": "a landslide",
}
_CAPTION_TEMPLATES = (
    "A {place} with {what}.",
    "{What} at a {place}.",
    "An image showing {what} near a {place}.",
    "There is {what} in this {place} scene.",
    "A picture of a {place} with {what}.",
)


@dataclass
class Scene:
    """A drawn scene and its labels (incident names positive, explicit negatives, place)."""

    image: np.ndarray
    recipe: Recipe
    place: str
    negatives: list[str]
    place_negatives: list[str]


def make_scene(rng: np.random.Generator, size: int) -> Scene:
    recipe = RECIPES[int(rng.integers(len(RECIPES)))]
    place = recipe.places[int(rng.integers(len(recipe.places)))]
    pool = [n for n in _RECIPE_LABELS if n not in recipe.incidents and (recipe.name == "normal" or n not in _NEVER_NEGATIVE)]
    negatives = sorted(rng.choice(pool, size=min(len(pool), int(rng.integers(3, 8))), replace=False).tolist())
    other_places = [p for p in PLACE_LABELS if p != place]
    place_negatives = sorted(rng.choice(other_places, size=2, replace=False).tolist())
    return Scene(draw_scene(recipe, place, rng, size), recipe, place, negatives, place_negatives)


def scene_phrase(scene: Scene) -> str:
    words = [_PHRASE[n] for n in scene.recipe.incidents]
    return " and ".join(words) if words else "nothing unusual"


def captions(scene: Scene, rng: np.random.Generator, n: int) -> list[str]:
    """n distinct-template captions stating the scene's labels."""
    what = scene_phrase(scene)
    picks = rng.permutation(len(_CAPTION_TEMPLATES))[:n]
    return [_CAPTION_TEMPLATES[i].format(place=scene.place, what=what, What=what[0].upper() + what[1:]) for i in picks]


def qa_pairs(scene: Scene) -> list[tuple[str, str]]:
    """Questions about the scene with answers that follow from its labels."""
    inc = set(scene.recipe.incidents)
    primary = scene.recipe.incidents[0] if scene.recipe.incidents else "nothing"
    return [
        ("Is anything on fire?", "yes" if inc & {"on fire", "wildfire"} else "no"),
        ("Is the area flooded?", "yes" if "flooded" in inc else "no"),
        ("Is there smoke?", "yes" if "with smoke" in inc else "no"),
        ("What kind of place is this?", scene.place),
        ("What happened here?", primary),
    ]


def _write_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise OSError(f"cannot write {path}")


def _dump(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))


def synth_incidents(root: Path, cfg: SynthConfig, rng: np.random.Generator, bad_rows: int) -> int:
    """Incidents1M format; returns the number of good rows."""
    ann: dict[str, dict] = {}
    for i in range(cfg.scenes):
        s = make_scene(rng, cfg.image_size)
        cls = s.recipe.incidents[0] if s.recipe.incidents else "no incident"
        key = f"{cls}/{hashlib.sha1(f'{cfg.seed}-{i}'.encode()).hexdigest()[:16]}.jpg"
        _write_jpg(root / "incidents/images" / key, s.image)
        incidents = {n: 1 for n in s.recipe.incidents} | {n: 0 for n in s.negatives}
        places = {s.place: 1} | {p: 0 for p in s.place_negatives}
        ann[key] = {"incidents": incidents, "places": places, "url": f"https://example.invalid/synth/{i}.jpg"}
    for k in range(bad_rows):
        ann[f"on fire/missing{k}.jpg"] = {"incidents": {"on fire": 1}, "places": {}, "url": ""}
        ann[f"on fire/unknown{k}.jpg"] = {"incidents": {"alien invasion": 1}, "places": {}, "url": ""}
        ann[f"on fire/malformed{k}.jpg"] = {"incidents": {"on fire": 2}, "places": {}, "url": ""}
        _write_jpg(root / f"incidents/images/on fire/unknown{k}.jpg", np.zeros((8, 8, 3), np.uint8))
        _write_jpg(root / f"incidents/images/on fire/malformed{k}.jpg", np.zeros((8, 8, 3), np.uint8))
    _dump(root / "incidents/multi_label_train.json", ann)
    return cfg.scenes


def synth_coco(root: Path, cfg: SynthConfig, rng: np.random.Generator, bad_rows: int) -> tuple[int, list]:
    """COCO captions (5 per image); returns (good caption rows, [(file name, scene)])."""
    images, anns, scenes = [], [], []
    for i in range(cfg.caption_images):
        s = make_scene(rng, cfg.image_size)
        name = f"{i + 1:012d}.jpg"
        _write_jpg(root / "coco/train2017" / name, s.image)
        images.append({"id": i + 1, "file_name": name, "width": cfg.image_size, "height": cfg.image_size})
        for cap in captions(s, rng, 5):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "caption": cap})
        scenes.append((name, s))
    good = len(anns)
    for k in range(bad_rows):
        images.append({"id": 10_000_000 + k, "file_name": f"missing{k}.jpg"})
        anns.append({"id": len(anns) + 1, "image_id": 10_000_000 + k, "caption": "A street."})
        anns.append({"id": len(anns) + 1, "image_id": 1})  # no caption
        anns.append({"id": len(anns) + 1, "image_id": 99_999_999, "caption": "No such image id."})
    _dump(root / "coco/annotations/captions_train2017.json", {"images": images, "annotations": anns})
    return good, scenes


def synth_flickr(root: Path, cfg: SynthConfig, rng: np.random.Generator, bad_rows: int) -> int:
    path = root / "flickr30k/results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    good = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="|")
        w.writerow(["image_name", " comment_number", " comment"])
        for i in range(cfg.caption_images):
            s = make_scene(rng, cfg.image_size)
            name = f"{1000 + i}.jpg"
            _write_jpg(root / "flickr30k/flickr30k_images" / name, s.image)
            for j, cap in enumerate(captions(s, rng, 5)):
                w.writerow([name, f" {j}", f" {cap}"])
                good += 1
        for k in range(bad_rows):
            w.writerow([f"missing{k}.jpg", " 0", " A street."])
            w.writerow([f"{1000}.jpg", f" {9 + k}"])  # two fields: malformed
    return good


def synth_llava(root: Path, scenes: list, rng: np.random.Generator, bad_rows: int) -> int:
    """Conversations about the COCO images; returns the number of (question, answer) turns."""
    rows, turns = [], 0
    for name, s in scenes:
        conv = [{"from": "human", "value": "<image>\nWhat is happening in this image?"},
                {"from": "gpt", "value": captions(s, rng, 1)[0]}]
        q, a = qa_pairs(s)[int(rng.integers(0, 5))]
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a.capitalize() + "."}]
        rows.append({"id": name[:-4], "image": name, "conversations": conv})
        turns += 2
    for k in range(bad_rows):
        rows.append({"id": f"missing{k}", "image": f"missing{k}.jpg", "conversations": rows[0]["conversations"]})
        rows.append({"id": f"odd{k}", "image": scenes[0][0], "conversations": rows[0]["conversations"][:1]})
    _dump(root / "llava/llava_instruct_150k.json", rows)
    return turns


def synth_vqa(root: Path, cfg: SynthConfig, rng: np.random.Generator, bad_rows: int) -> int:
    questions, annotations = [], []
    for i in range(cfg.caption_images):
        s = make_scene(rng, cfg.image_size)
        image_id = 500_000 + i
        _write_jpg(root / f"coco/train2014/COCO_train2014_{image_id:012d}.jpg", s.image)
        for k in rng.permutation(5)[:3]:
            q, a = qa_pairs(s)[int(k)]
            qid = image_id * 10 + int(k)
            questions.append({"image_id": image_id, "question": q, "question_id": qid})
            annotations.append({
                "question_id": qid, "image_id": image_id, "multiple_choice_answer": a,
                "answer_type": "yes/no" if a in ("yes", "no") else "other", "question_type": q.split()[0].lower(),
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j in range(10)],
            })
    good = len(questions)
    for k in range(bad_rows):
        questions.append({"image_id": 999_000 + k, "question": "Is it raining?", "question_id": 9_990_000 + k})
        annotations.append({"question_id": 9_990_000 + k, "image_id": 999_000 + k, "multiple_choice_answer": "no"})
        questions.append({"image_id": 500_000, "question": "Unanswered?", "question_id": 9_980_000 + k})
        questions.append({"image_id": 500_000, "question_id": 9_970_000 + k})  # no question text
    meta = {"info": {}, "license": {}, "data_subtype": "train2014", "data_type": "mscoco"}
    _dump(root / "vqa/v2_OpenEnded_mscoco_train2014_questions.json", meta | {"task_type": "Open-Ended", "questions": questions})
    _dump(root / "vqa/v2_mscoco_train2014_annotations.json", meta | {"annotations": annotations})
    return good


CAPABILITY_SHEET = (
    "Robots: Drone, Underwater Robot, Humanoid, Robot with Wheels, Robot with Legs. "
    "What is the most suited robot for the task?\n"
    "Drone:\ncapabilities: aerial navigation, surveillance, aerial inspection,\nlimitations: limited payload,\n"
    "environments: outdoor, hard to reach areas\n"
    "Humanoid:\ncapabilities: manipulation, tool use, human interaction,\nlimitations: slow movement,\n"
    "environments: indoor, human environments\n"
    "Robot with Legs:\ncapabilities: rough terrain navigation, load carrying, inspection,\nlimitations: limited manipulation,\n"
    "environments: uneven terrain, stairs, search and rescue\n"
    "Robot with Wheels:\ncapabilities: fast movement, good payload, efficient,\nlimitations: flat surfaces only,\n"
    "environments: warehouse, roads\n"
    "Underwater Robot:\ncapabilities: underwater navigation, marine inspection, underwater manipulation,\n"
    "limitations: water environments only,\nenvironments: underwater, marine, ocean exploration"
)
_ROBOT_TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Survey the burning forest from above to map the fire front.", ("Drone",)),
    ("Inspect the roof of the collapsed building for hot spots.", ("Drone",)),
    ("Inspect the sunken ship\u2019s hull for leaks.", ("Underwater Robot",)),
    ("Search the seabed near the oil spill for the broken pipe.", ("Underwater Robot",)),
    ("Climb over the rubble to search for survivors.", ("Robot with Legs",)),
    ("Carry medical supplies up the stairs of the damaged house.", ("Robot with Legs", "Humanoid")),
    ("Deliver water bottles along the flooded road to the shelter.", ("Robot with Wheels",)),
    ("Open the valve inside the factory and use the tools to stop the leak.", ("Humanoid",)),
    ("Map the landslide and search the debris field for survivors.", ("Drone", "Robot with Legs")),
    ("Transport sandbags on the highway and watch the \u201criver level\u201d from above.", ("Robot with Wheels", "Drone")),
)


def synth_robot_selection(root: Path, rng: np.random.Generator, bad_rows: int, repeats: int = 3) -> tuple[int, int]:
    """`repeats` rounds over the tasks (robot orders and plans drawn anew; a row that comes out as an
    exact copy of an earlier one is not written: loaders drop it); returns (single, multi) good rows."""
    single, multi = [], []
    for _ in range(repeats):
        for task, robots in _ROBOT_TASKS:
            order = list(rng.permutation(len(robots)))
            output = ", ".join(robots[i] for i in order)
            _add_new(single, {"instruction": CAPABILITY_SHEET, "input": f"Task: {task}", "output": output})
            steps = []
            for k in range(4):
                robot = robots[k % len(robots)] if k < 3 else ROBOT_DISPLAY_NAMES[int(rng.integers(5))]
                steps.append({"subtask": f"Step {k + 1} of: {task.rstrip('.').lower()}", "assigned_robot": robot,
                              "execution_order": k + 1 if k != 2 else 2})
            out = list(robots) if rng.random() < 0.3 else output
            _add_new(multi, {"instruction": CAPABILITY_SHEET, "input": f"Task: {task}", "subtasks": steps,
                             "original_single_robot_output": out})
    good = len(single), len(multi)
    for k in range(bad_rows):
        single.append({"instruction": CAPABILITY_SHEET, "input": f"Task: Fly to moon {k}.", "output": "Robot with Wings"})
        single.append({"instruction": CAPABILITY_SHEET, "output": f"Drone {k}"})  # no input
        multi.append({"instruction": CAPABILITY_SHEET, "input": f"Task: Fly {k}.", "subtasks": [
            {"subtask": "Fly", "assigned_robot": "Jetpack", "execution_order": 1}], "original_single_robot_output": "Drone"})
        multi.append({"instruction": CAPABILITY_SHEET, "input": f"Task: Walk {k}.", "subtasks": "walk"})
    _dump(root / "robot_selection/single_robot_selection.json", single)
    _dump(root / "robot_selection/multi_robot_selection_dataset.json", multi)
    return good


def _add_new(rows: list[dict], row: dict) -> None:
    """Append `row` unless it is an exact copy of one already there."""
    if row not in rows:
        rows.append(row)


def synth_all(out: Path, cfg: SynthConfig, bad_rows: int = 0) -> dict[str, int]:
    """Write every dataset under `out`; returns the number of good rows/samples per dataset."""
    out = Path(out)
    rng = np.random.default_rng(cfg.seed)
    counts = {"incidents": synth_incidents(out, cfg, rng, bad_rows)}
    counts["coco"], scenes = synth_coco(out, cfg, rng, bad_rows)
    counts["flickr30k"] = synth_flickr(out, cfg, rng, bad_rows)
    counts["llava"] = synth_llava(out, scenes, rng, bad_rows)
    counts["vqa"] = synth_vqa(out, cfg, rng, bad_rows)
    counts["robot_single"], counts["robot_multi"] = synth_robot_selection(out, rng, bad_rows)
    (out / "SYNTHETIC").write_text(
        "Generated by `ember-data synth` (ember_training.data.synth): drawn scenes, not real data.\n"
        + json.dumps({"seed": cfg.seed, "bad_rows": bad_rows, "counts": counts}) + "\n"
    )
    return counts


