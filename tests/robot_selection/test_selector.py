"""The bundle's text robot selector: trained on the train split only, read back by the engine
exactly as trained, shipped by ember-export, used by EmberEngine for text tasks; bad files fail
with a clear error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ember.engine import BundleError, EmberEngine
from ember.engine.bundle import sha256_file
from ember.engine.robot_selector import SELECTOR_FILE, RobotSelector, words_of
from ember.labels import ROBOT_TYPES
from ember.prompting import DEFAULT_TASK
from ember_training.robot_selection.augment import teacher_words
from ember_training.robot_selection.config import SelectorConfig
from ember_training.robot_selection.folds import grouped_folds, normalize_task, split
from ember_training.robot_selection.selector import _QuantisedEncoder, save_selector, train_selector

from .conftest import FakeTeacher

SMALL = SelectorConfig(words=400, dim=24, steps=80, batch_size=32, lr=1e-2, variants_per_task=1,
                       recombinations=20, phrases=60)


@pytest.fixture(scope="module")
def fold(tasks):
    folds = grouped_folds([t.task for t in tasks], [t.robots for t in tasks])
    tr, te = split(folds, 0)
    return [tasks[i] for i in tr], [tasks[i] for i in te]


@pytest.fixture(scope="module")
def trained(fold, tmp_path_factory):
    train, _ = fold
    teacher = FakeTeacher()
    arrays, info = train_selector(train, SMALL, 0, teacher)
    path = save_selector(arrays, tmp_path_factory.mktemp("selector") / SELECTOR_FILE)
    return path, arrays, info, teacher


def test_selector_sees_only_the_train_split(fold, trained):
    train, test = fold
    _, arrays, _, teacher = trained
    test_keys = {normalize_task(t.task) for t in test}
    assert not {normalize_task(x) for x in teacher.seen} & test_keys
    test_only_subtasks = {s for t in test for _, s, _ in t.steps} - {s for t in train for _, s, _ in t.steps}
    assert not set(teacher.seen) & test_only_subtasks
    vocab = {w.decode() for w in arrays["words"]}
    allowed = set(teacher_words()[: SMALL.words]) | {w for t in train for w in words_of(t.task)}
    assert vocab <= allowed
    test_only = {w for t in test for w in words_of(t.task)} - allowed
    assert test_only and not vocab & test_only


def test_distillation_raises_the_cosine_to_the_teacher(trained):
    _, _, info, _ = trained
    assert info["selector_distill_cos"] > info["selector_distill_cos_first"] + 0.03


def test_engine_reads_the_selector_as_trained(fold, trained):
    train, _ = fold
    path, arrays, _, _ = trained
    sel = RobotSelector(path, len(ROBOT_TYPES))
    assert isinstance(sel.vectors, np.memmap) and isinstance(sel.words, np.memmap)  # off the RSS budget
    ref = _QuantisedEncoder([w.decode() for w in arrays["words"]], arrays["vectors"], arrays["scales"], arrays["weights"])
    train_sets = {t.robots for t in train}
    for t in train[:20]:
        np.testing.assert_allclose(sel.embed(t.task), ref.embed(t.task), atol=1e-5)
        s = sel.select(t.task)
        assert tuple(sorted(s.chosen)) in train_sets and s.known_words > 0
        assert np.all((s.scores >= 0) & (s.scores <= 1 + 1e-6))
        assert s.chosen[0] == int(np.argmax(s.scores)) or s.scores[s.chosen[0]] == s.scores.max()
    assert sel.select("zzzq xxqv") is None and sel.select("") is None
    longest = max(arrays["words"], key=len).decode()
    assert sel.select(longest + "s") is None  # too long for the table: unknown, not truncated into a match


def test_selector_fits_its_train_split_better_than_the_majority_set(fold, trained):
    train, _ = fold
    sel = RobotSelector(trained[0], len(ROBOT_TYPES))
    exact = np.mean([tuple(sorted(sel.select(t.task).chosen)) == t.robots for t in train])
    sets = [t.robots for t in train]
    majority = max(sets.count(s) for s in set(sets)) / len(sets)
    assert exact > majority + 0.1, (exact, majority)


def _rewrite(src, dst, **changes):
    with np.load(src) as d:
        arrays = {k: d[k] for k in d.files}
    arrays.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del arrays[k]
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)
    return dst


def test_bad_selector_files_fail_clearly(trained, tmp_path):
    path = trained[0]
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot read truncated.npz"):
        RobotSelector(bad, 5)
    with pytest.raises(ValueError, match="lacks array"):
        RobotSelector(_rewrite(path, tmp_path / "a.npz", head_b=None), 5)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        RobotSelector(_rewrite(path, tmp_path / "b.npz", sets=np.zeros((3, 5), np.uint8)), 5)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        RobotSelector(path, 4)
    with np.load(path) as d:
        words = d["words"][::-1].copy()
    with pytest.raises(ValueError, match="sorted"):
        RobotSelector(_rewrite(path, tmp_path / "c.npz", words=words), 5)


@pytest.fixture(scope="module")
def selector_bundle(trained, tmp_path_factory):
    from ember_training.testing import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("sel_bundle") / "bundle", robot_selector=trained[0])


def test_export_ships_the_selector_hashed_and_described(selector_bundle, trained):
    meta = json.loads((selector_bundle / "bundle.json").read_text())
    assert meta["files"][SELECTOR_FILE]["sha256"] == sha256_file(trained[0])
    assert meta["robot_selector"]["file"] == SELECTOR_FILE and meta["robot_selector"]["dim"] == SMALL.dim


def test_engine_lets_the_selector_decide_text_tasks(selector_bundle, trained, fold):
    train, _ = fold
    engine = EmberEngine(selector_bundle)
    sel = RobotSelector(trained[0], len(ROBOT_TYPES))
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    task = train[3].task
    a = engine.analyze(image, task, max_new_tokens=2)
    want = sel.select(task)
    assert a.robot_source == "text-selector"
    assert a.robot_types == [ROBOT_TYPES[i] for i in want.chosen]
    np.testing.assert_allclose(a.robot_scores, want.scores, atol=1e-6)
    for camera_task in (None, DEFAULT_TASK, "zzzq qqxv"):  # no task, the camera default, no known word
        assert engine.analyze(image, camera_task, max_new_tokens=1).robot_source == "decoder-head"


def test_engine_refuses_a_corrupt_selector(selector_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(selector_bundle, dst)
    (dst / SELECTOR_FILE).write_bytes(b"not an npz file")
    with pytest.raises(BundleError, match="sha256 mismatch for robot_selector.npz"):
        EmberEngine(dst)
    meta = json.loads((dst / "bundle.json").read_text())
    meta["files"][SELECTOR_FILE]["sha256"] = sha256_file(dst / SELECTOR_FILE)
    (dst / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="robot_selector.npz"):
        EmberEngine(dst)


def test_export_refuses_a_checkpoint_whose_selector_is_missing(tmp_path):
    from ember_training.export.bundle_writer import ExportError
    from ember_training.export.cli import selector_of

    ckpt = tmp_path / "final.pt"
    assert selector_of(ckpt, {}) is None
    with pytest.raises(ExportError, match="robot_selector.npz"):
        selector_of(ckpt, {"robot_selector": SELECTOR_FILE})
    (tmp_path / SELECTOR_FILE).write_bytes(b"x")
    assert selector_of(ckpt, {"robot_selector": SELECTOR_FILE}) == tmp_path / SELECTOR_FILE


def test_selector_config_rejects_bad_values():
    from ember_training.config import ConfigError, config_from_dict

    with pytest.raises(ValueError, match="dim"):
        SelectorConfig(dim=500)
    with pytest.raises(ValueError, match="steps"):
        SelectorConfig(steps=0)
    with pytest.raises(ConfigError, match="robot_selection.selector"):
        config_from_dict({"model": {}, "tokenizer": {}, "robot_selection": {"selector": {"wordz": 3}}})


# ---------------------------------------------------------------------------- the plan-step robot head
def _step_accuracy(sel, tasks):
    hits = total = 0
    for t in tasks:
        got = sel.select(t.task).step_robots
        for k, (_, _, robot) in enumerate(t.steps):
            total += 1
            hits += k < len(got) and got[k] == robot
    return hits / total


def test_step_head_learns_the_robots_of_its_train_plans_beyond_the_per_step_majority(fold, trained):
    train, _ = fold
    path, arrays, info, _ = trained
    longest = max(len(t.steps) for t in train)
    assert arrays["step_w"].shape == (longest, len(ROBOT_TYPES), SMALL.dim) and info["selector_plan_steps"] == longest
    sel = RobotSelector(path, len(ROBOT_TYPES))
    majority = 0
    for k in range(longest):
        kth = [t.steps[k][2] for t in train if len(t.steps) > k]
        majority += max(kth.count(r) for r in set(kth))
    majority /= sum(len(t.steps) for t in train)
    assert _step_accuracy(sel, train) > majority + 0.1, (_step_accuracy(sel, train), majority)


def test_step_head_is_off_at_c_zero_and_without_plans(fold):
    train, _ = fold
    from dataclasses import replace as dc_replace

    off, info = train_selector(train[:60], dc_replace(SMALL, step_head_c=0.0, steps=5), 0, FakeTeacher())
    assert "step_w" not in off and info["selector_plan_steps"] == 0
    no_plans = [dc_replace(t, steps=()) for t in train[:60]]
    arrays, _ = train_selector(no_plans, dc_replace(SMALL, steps=5), 0, FakeTeacher())
    assert "step_w" not in arrays
    with pytest.raises(ValueError, match="step_head_c"):
        SelectorConfig(step_head_c=-1.0)


def test_a_selector_file_without_step_head_still_loads_and_decides_no_step(trained, tmp_path):
    old = RobotSelector(_rewrite(trained[0], tmp_path / "old.npz", step_w=None, step_b=None), len(ROBOT_TYPES))
    s = old.select("inspect the pipes under the bridge")
    assert s.step_robots == () and s.chosen


def test_bad_step_heads_fail_clearly(trained, tmp_path):
    path = trained[0]
    with np.load(path) as d:
        w, b = d["step_w"], d["step_b"]
    with pytest.raises(ValueError, match="needs both"):
        RobotSelector(_rewrite(path, tmp_path / "a.npz", step_b=None), 5)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        RobotSelector(_rewrite(path, tmp_path / "b.npz", step_w=w[:, :, :-1]), 5)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        RobotSelector(_rewrite(path, tmp_path / "c.npz", step_b=b[:-1]), 5)
    nan = w.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RobotSelector(_rewrite(path, tmp_path / "d.npz", step_w=nan), 5)


def _heads(engine):
    return {"incident_logits": np.zeros(len(engine.incident_labels), np.float32),
            "place_logits": np.zeros(len(engine.place_labels), np.float32),
            "robot_logits": np.zeros(len(engine.robot_types), np.float32),
            "confidence_logit": np.zeros(1, np.float32)}


def test_engine_gives_a_text_tasks_plan_steps_the_robots_of_the_step_head(selector_bundle, trained, fold):
    train, _ = fold
    engine = EmberEngine(selector_bundle)
    sel = RobotSelector(trained[0], len(ROBOT_TYPES))
    generated = ("I see a flood. <answer>Drone<plan>1. Survey the area [Underwater Robot]\n2. Carry supplies [Underwater Robot]\n"
                 "3. Help people [Underwater Robot]\n4. Report [Underwater Robot]\n5. Stand by [Underwater Robot]")
    heads = _heads(engine)
    for t in train[:10]:
        want = sel.select(t.task).step_robots
        a = engine._to_analysis(heads, generated, 40, t.task)
        assert a.text == generated  # the generation is reported as written
        assert [s.robot_type for s in a.steps] == [ROBOT_TYPES[r] for r in want] + ["underwater"][: 5 - len(want)]
        assert [s.description for s in a.steps][:2] == ["Survey the area", "Carry supplies"]
    for camera_task in (None, DEFAULT_TASK, "zzzq qqxv"):  # the decoder decides: the steps stay as generated
        a = engine._to_analysis(heads, generated, 40, camera_task)
        assert [s.robot_type for s in a.steps] == ["underwater"] * 5
