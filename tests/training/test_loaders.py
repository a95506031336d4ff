"""Every loader on generated files (real formats) with defective rows counted and skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from ember.labels import ROBOT_TYPES, incident_index, place_index, robot_index
from ember.prompting import ANSWER_TOKEN, EOS_TOKEN, PLAN_TOKEN, parse_generation
from ember_training.data.captions import load_coco_captions, load_flickr30k
from ember_training.data.common import (
    DUPLICATE,
    MALFORMED,
    MISSING_IMAGE,
    NO_ANSWER,
    UNKNOWN_LABEL,
    DataError,
)
from ember_training.data.incidents import load_incidents
from ember_training.data.instruct import load_llava, load_vqa
from ember_training.data.robot_selection import load_robot_multi, load_robot_single
from ember_training.data.text import robot_target

BAD = 2  # defective rows of each kind that synth_dir wrote


@pytest.fixture(scope="module")
def counts(synth_dir):
    return yaml.safe_load((synth_dir / "counts.yaml").read_text())


def test_coco(synth_dir, counts):
    samples, rep = load_coco_captions(synth_dir / "coco/annotations/captions_train2017.json", synth_dir / "coco/train2017")
    assert len(samples) == rep.kept == counts["coco"]
    assert rep.skipped == {MISSING_IMAGE: BAD, MALFORMED: 2 * BAD}
    assert all(s.target.endswith(EOS_TOKEN) and s.image for s in samples)
    assert "skipped 6" in rep.summary()


def test_flickr30k_results_csv(synth_dir, counts):
    samples, rep = load_flickr30k(synth_dir / "flickr30k/results.csv", synth_dir / "flickr30k/flickr30k_images")
    assert len(samples) == counts["flickr30k"]
    assert rep.skipped == {MISSING_IMAGE: BAD, MALFORMED: BAD}


def test_flickr30k_karpathy_json(synth_dir, tmp_path):
    images = synth_dir / "flickr30k/flickr30k_images"
    name = sorted(p.name for p in images.iterdir())[0]
    data = {"dataset": "flickr30k", "images": [
        {"filename": name, "split": "train", "sentences": [{"raw": "A car crash."}, {"raw": "  "}]},
        {"filename": name, "split": "test", "sentences": [{"raw": "held out"}]},
        {"filename": "gone.jpg", "split": "restval", "sentences": [{"raw": "Missing."}]},
        "not a dict",
    ]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(data))
    samples, rep = load_flickr30k(tmp_path / "dataset_flickr30k.json", images)
    assert [s.target for s in samples] == ["A car crash." + EOS_TOKEN]
    assert rep.skipped == {MALFORMED: 2, MISSING_IMAGE: 1}


def test_llava_turns_keep_history(synth_dir, counts):
    samples, rep = load_llava(synth_dir / "llava/llava_instruct_150k.json", synth_dir / "coco/train2017")
    assert len(samples) == counts["llava"]
    assert rep.skipped == {MISSING_IMAGE: BAD, MALFORMED: BAD}
    first, second = samples[0], samples[1]
    assert "<image>" not in first.task and first.task == "What is happening in this image?"
    assert second.task.startswith("Q: What is happening") and first.target[: -len(EOS_TOKEN)] in second.task


def test_vqa_answers_are_targets(synth_dir, counts):
    samples, rep = load_vqa(
        synth_dir / "vqa/v2_OpenEnded_mscoco_train2014_questions.json",
        synth_dir / "vqa/v2_mscoco_train2014_annotations.json", synth_dir / "coco/train2014",
    )
    assert len(samples) == counts["vqa"]
    assert rep.skipped == {MISSING_IMAGE: BAD, NO_ANSWER: BAD, MALFORMED: BAD}
    ann = json.loads((synth_dir / "vqa/v2_mscoco_train2014_annotations.json").read_text())["annotations"]
    answers = {a["question_id"]: a["multiple_choice_answer"] for a in ann}
    for s in samples[:20]:
        assert s.target == answers[int(s.uid.split("/")[1])] + EOS_TOKEN


def test_incidents_keep_explicit_negatives_and_mask_unknown(synth_dir, counts):
    samples, rep = load_incidents(synth_dir / "incidents/multi_label_train.json", synth_dir / "incidents/images")
    assert len(samples) == counts["incidents"]
    assert rep.skipped == {MISSING_IMAGE: BAD, UNKNOWN_LABEL: BAD, MALFORMED: BAD}
    ann = json.loads((synth_dir / "incidents/multi_label_train.json").read_text())
    for s in samples:
        row = ann[s.uid.split("/", 1)[1]]
        for name, value in row["incidents"].items():
            assert s.incidents[incident_index(name)] == value
        for name, value in row["places"].items():
            assert s.places[place_index(name)] == value
        assert (s.incidents == -1).sum() == 43 - len(row["incidents"])
    assert any((s.incidents == 0).any() for s in samples), "explicit negatives must be kept"


def test_incidents_real_format_row(tmp_path):
    img = tmp_path / "images/flooded/abc.jpg"
    img.parent.mkdir(parents=True)
    import cv2

    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    ann = {"flooded/abc.jpg": {"incidents": {"flooded": 1, "on fire": 0}, "places": {"street": 1}, "url": "http://x"},
           "flooded/nolabels.jpg": {"incidents": {}, "places": {}, "url": "http://y"},
           "flooded/bad.jpg": ["not", "a", "dict"]}
    (tmp_path / "a.json").write_text(json.dumps(ann))
    samples, rep = load_incidents(tmp_path / "a.json", tmp_path / "images")
    assert len(samples) == 1 and rep.rows == 3 and rep.n_skipped == 2
    s = samples[0]
    assert s.incidents[incident_index("flooded")] == 1 and s.incidents[incident_index("on fire")] == 0
    assert s.places[place_index("street")] == 1 and (s.places == 1).sum() == 1


def test_robot_single_shared_data(shared_data):
    samples, rep = load_robot_single(shared_data / "robot_selection/single_robot_selection.json")
    assert rep.rows == 198 and rep.skipped == {DUPLICATE: 4} and len(samples) == 194  # 4 rows are doubled
    raw = json.loads((shared_data / "robot_selection/single_robot_selection.json").read_text())
    distinct = [row for i, row in enumerate(raw) if row not in raw[:i]]
    for s, row in zip(samples, distinct, strict=True):
        want = {robot_index(p) for p in row["output"].split(",")}
        assert set(s.robot_set) == want and set(np.flatnonzero(s.robots == 1)) == want
        assert (s.robots >= 0).all(), "robot sets are complete labels: absent robots are negatives"
        assert not s.task.lower().startswith("task:")
    assert any("\u2019" in s.task for s in samples), "curly quotes are kept as written"
    assert set(samples[0].capabilities) == set(range(5))


def test_robot_multi_shared_data_plans(shared_data):
    samples, rep = load_robot_multi(shared_data / "robot_selection/multi_robot_selection_dataset.json")
    assert len(samples) == 194 and rep.skipped == {DUPLICATE: 4}  # 4 rows are doubled
    for s in samples:
        assert len(s.steps) == 4 and [o for o, _, _ in s.steps] == sorted(o for o, _, _ in s.steps)
        text = robot_target(s.task, s.robot_set, s.steps, s.capabilities, None, None)
        parsed = parse_generation(text)
        assert parsed.robot_types == [ROBOT_TYPES[i] for i in s.robot_set]
        assert [(st.order, st.robot_type) for st in parsed.steps] == [(o, ROBOT_TYPES[r]) for o, _, r in s.steps]
        assert ANSWER_TOKEN in text and PLAN_TOKEN in text


def test_robot_files_generated_with_bad_rows(synth_dir, counts):
    single, rep = load_robot_single(synth_dir / "robot_selection/single_robot_selection.json")
    assert len(single) == counts["robot_single"] and rep.skipped == {UNKNOWN_LABEL: BAD, MALFORMED: BAD}
    multi, rep = load_robot_multi(synth_dir / "robot_selection/multi_robot_selection_dataset.json")
    assert len(multi) == counts["robot_multi"] and rep.skipped == {UNKNOWN_LABEL: BAD, MALFORMED: BAD}


def test_unreadable_files_raise_naming_the_dataset(tmp_path):
    with pytest.raises(DataError, match="coco: file not found"):
        load_coco_captions(tmp_path / "nope.json", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="robot_single: .* is not valid JSON"):
        load_robot_single(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="incidents"):
        load_incidents(tmp_path / "list.json", tmp_path)
