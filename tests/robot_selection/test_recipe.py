"""Robot-selection recipe: no test-fold text reaches training or the teacher, the loss falls,
thresholds come from inner CV, every config key is read, plan metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from ember_training.robot_selection import cv, recipe
from ember_training.robot_selection.config import RobotSelectionConfig, SelectorConfig
from ember_training.robot_selection.folds import grouped_folds, normalize_task, split
from ember_training.robot_selection.tasks import load_tasks

from .conftest import FakeTeacher

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(enabled=True, steps=30, lr=2e-3, warmup_steps=2, batch_size=8, distill_batch_size=8,
             variants_per_task=2, recombinations=40, generic_words=200, generic_phrases=40, inner_folds=3,
             selector=dict(words=300, dim=16, steps=20, batch_size=16, variants_per_task=1, recombinations=20,
                           phrases=40))


def _rs(**changes) -> RobotSelectionConfig:
    return RobotSelectionConfig(**{**SMALL, "selector": SelectorConfig(**SMALL["selector"]), **changes})


def _fold(tasks, f=0):
    folds = grouped_folds([t.task for t in tasks], [t.robots for t in tasks])
    tr, te = split(folds, f)
    return [tasks[i] for i in tr], [tasks[i] for i in te]


def _words(text):
    return set(normalize_task(text).split())


def test_no_test_fold_text_in_distillation_or_teacher_inputs(tasks):
    train, test = _fold(tasks)
    teacher = FakeTeacher()
    data = recipe.build_recipe_data(train, _rs(), seed=0, teacher=teacher)
    test_keys = {normalize_task(t.task) for t in test}
    test_subtasks_only = {s for t in test for _, s, _ in t.steps} - {s for t in train for _, s, _ in t.steps}
    for pool in (data.distill_texts, teacher.seen):
        keys = {normalize_task(x) for x in pool}
        assert not keys & test_keys
        assert not set(pool) & test_subtasks_only
    # task-derived texts only use words of the train split (generic corpus aside)
    train_words = set().union(*(_words(t.task) for t in train))
    n_task = data.info["n_task_texts"]
    for text in data.distill_texts[:n_task]:
        if text not in {s for t in train for _, s, _ in t.steps}:
            assert _words(text) <= train_words, text
    assert data.labels.shape == (len(train), 5) and data.soft_targets.shape == (len(data.distill_texts), 5)


def test_cv_split_files_hold_only_train_rows(tasks, shared_data, tmp_path):
    train, test = _fold(tasks, 2)
    src = shared_data / "robot_selection" / "single_robot_selection.json"
    cv.write_split(src, [t.index for t in train], tmp_path)
    got = load_tasks(tmp_path)
    assert [t.task for t in got] == [t.task for t in train] and [t.steps for t in got] == [t.steps for t in train]
    cv.check_no_leak(got, test)
    with pytest.raises(RuntimeError):
        cv.check_no_leak(got, [train[0]])


def test_thresholds_from_inner_cv_of_the_train_split(tasks):
    train, _ = _fold(tasks)
    emb = FakeTeacher().embed([t.task for t in train])
    rs = _rs()
    th1, info = recipe.calibrate_thresholds(emb, train, rs, seed=0)
    th2, _ = recipe.calibrate_thresholds(emb, train, rs, seed=0)
    assert th1 == th2 and len(th1) == 5 and all(0.2 <= t <= 0.7 for t in th1)
    assert 0 <= info["inner_oof_exact"] <= 1


def _tiny_model_and_tok(texts):
    from ember_training.config import load_config
    from ember_training.model import EmberVLM
    from ember_training.tokenizer import train_bpe

    cfg = load_config(ROOT / "config" / "train" / "tiny.yaml")
    torch.manual_seed(0)
    tok = train_bpe([*texts] * 3, 512)
    return EmberVLM(cfg.model), tok, cfg


def test_recipe_loss_falls(tasks):
    train, _ = _fold(tasks)
    train = train[:48]
    rs = _rs(lm_weight=0.1)
    data = recipe.build_recipe_data(train, rs, seed=0, teacher=FakeTeacher())
    model, tok, cfg = _tiny_model_and_tok([t.task for t in train] + data.distill_texts[:200])
    d = cfg.model.d_model
    pool = recipe.VisualPool(torch.randn(3, cfg.model.num_visual_tokens, d) * 0.1, [None] * 3, [None] * 3)
    hist = recipe.train_recipe(model, tok, data, rs, pool, 48, 96, seed=0, device=torch.device("cpu"))
    first = sum(h["loss"] for h in hist[:5]) / 5
    last = sum(h["loss"] for h in hist[-5:]) / 5
    assert last < first * 0.9, (first, last)
    assert hist[-1]["distill_cos"] > hist[0]["distill_cos"]


def test_init_token_embeddings_from_teacher(tasks):
    model, tok, _ = _tiny_model_and_tok([t.task for t in tasks])
    rs = RobotSelectionConfig(enabled=True, init_embeddings=0.5)
    assert recipe.init_token_embeddings(model, tok, rs, FakeTeacher())
    norms = model.decoder.wte.weight[: tok.get_vocab_size()].norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 0.5), atol=1e-4)
    assert not recipe.init_token_embeddings(model, tok, RobotSelectionConfig(enabled=False), FakeTeacher())


def test_config_rejects_bad_values():
    from ember_training.config import ConfigError, config_from_dict

    with pytest.raises(ValueError):
        RobotSelectionConfig(steps=0)
    with pytest.raises(ConfigError, match="robot_selection"):
        config_from_dict({"model": {}, "tokenizer": {}, "robot_selection": {"stepz": 3}})


def test_tiny_run_with_recipe_reads_every_key(tmp_path, monkeypatch):
    """ember-train on tiny with the recipe enabled: robot_selection/final.pt with thresholds and the
    text robot selector beside it; every RobotSelectionConfig and SelectorConfig field is read by code."""
    import sys

    from ember.engine.robot_selector import RobotSelector
    from ember_training.checkpoint_format import load_checkpoint
    from ember_training.config import load_config
    from ember_training.trainer import Trainer

    sys.path.insert(0, str(ROOT / "tests" / "training"))
    from training_helpers import quick_overrides, write_config

    monkeypatch.setattr(recipe, "MiniLMTeacher", FakeTeacher)
    reads: set[str] = set()
    names = {f.name for f in dataclasses.fields(RobotSelectionConfig)}
    names |= {f"selector.{f.name}" for f in dataclasses.fields(SelectorConfig)}

    def getter(self, name):
        key = f"selector.{name}" if type(self) is SelectorConfig else name
        if key in names and sys._getframe(1).f_code.co_name not in ("__post_init__", "__repr__", "__eq__"):
            reads.add(key)
        return object.__getattribute__(self, name)

    ov = quick_overrides()
    ov["robot_selection"] = {**SMALL, "steps": 3, "teacher_cache": None}
    cfg = load_config(write_config(tmp_path / "tiny.yaml", ov))
    monkeypatch.setattr(RobotSelectionConfig, "__getattribute__", getter, raising=False)
    monkeypatch.setattr(SelectorConfig, "__getattribute__", getter, raising=False)
    Trainer(cfg, tmp_path / "out").run([1, 2, 3, 4])
    monkeypatch.undo()
    ckpt = load_checkpoint(tmp_path / "out" / "robot_selection" / "final.pt")
    assert len(ckpt["robot_thresholds"]) == 5 and ckpt["stage"] == "robot_selection"
    assert ckpt["robot_selector"] == "robot_selector.npz"
    rows = [json.loads(x) for x in (tmp_path / "out" / "robot_selection" / "selector_metrics.jsonl").read_text().splitlines()]
    assert rows and all({"step", "distill_loss"} <= set(r) for r in rows)
    assert RobotSelector(tmp_path / "out" / "robot_selection" / "robot_selector.npz", 5).sets.shape[1] == 5
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["robot_selection"]["steps"] == 3 and [s["stage"] for s in summary["stages"]] == [1, 2, 3, 4]
    assert names - reads == set(), f"never read: {sorted(names - reads)}"


def test_plan_metrics():
    ref = [[(1, "Aerial survey", 0), (2, "Ground check", 3)]]
    perfect = [[(1, "Aerial survey", "drone"), (2, "Ground check", "legged")]]
    m = cv.plan_metrics(ref, perfect)
    assert m["step_robot_accuracy"] == 1.0 and m["plan_rate"] == 1.0 and m["plan_bleu"] > 99
    m = cv.plan_metrics(ref, [[(1, "Aerial survey", "legged")]])
    assert m["step_robot_accuracy"] == 0.0
    assert cv.plan_metrics(ref, [[]])["plan_rate"] == 0.0


def test_knn_baseline_votes_with_the_nearest_training_rows(tasks):
    import numpy as np

    train_vecs = np.eye(4)
    labels = np.array([[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 1, 0, 0, 0]], float)
    test_vecs = np.array([[0.9, 0.1, 0, 0], [0, 0, 1, 0]])
    scores = cv.knn_scores(train_vecs, labels, test_vecs, k=2)
    assert scores[0, 0] == pytest.approx(1.0) and scores[1].argmax() == 4 and scores[1, 4] > 0.99
    # on a real split, with the fake teacher's word vectors: far above always-{Drone}, scored on the test fold
    train, test = _fold(tasks)
    teacher = FakeTeacher()
    knn = cv.baseline_minilm_knn(train, test, teacher)
    assert knn["exact_match"] > cv.baseline_always_drone(train, test)["exact_match"] + 0.1
    assert set(teacher.seen) == {t.task for t in train} | {t.task for t in test}


@pytest.mark.slow
def test_cv_command_on_tiny(tmp_path, shared_data):
    """One fold of `ember-eval robot-selection --cv 5` with tiny settings: trains, exports INT8, runs the engine."""
    from ember.eval.cli import main

    sets = ["stages.alignment.steps=2", "stages.instruct.steps=2", "stages.incidents.steps=2", "stages.reasoning.steps=2",
            "tracking.progress=false", "data.synth.scenes=24", "data.synth.caption_images=8", "train.batch_size=4",
            "robot_selection.enabled=true", "robot_selection.steps=3", "robot_selection.generic_words=200",
            "robot_selection.generic_phrases=20", "robot_selection.recombinations=20", "robot_selection.batch_size=4",
            "robot_selection.distill_batch_size=4", "robot_selection.selector.words=300",
            "robot_selection.selector.dim=16", "robot_selection.selector.steps=10",
            "robot_selection.selector.phrases=20", "robot_selection.selector.recombinations=20"]
    out = tmp_path / "cv.json"
    argv = ["robot-selection", "--cv", "5", "--folds", "0", "--config", str(ROOT / "config" / "train" / "tiny.yaml"),
            "--data", str(shared_data / "robot_selection" / "single_robot_selection.json"), "--json", str(out),
            "--work", str(tmp_path / "work"), "--plan-tokens", "16"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    s = json.loads(out.read_text())
    assert s["folds_run"] == [0] and "exact_match" in s["model"]
    assert {"tfidf_lr", "minilm_knn", "always_drone", "majority_plan"} <= set(s["baselines"])
    assert {"ratio_to_tfidf_lr", "ratio_to_minilm_knn"} <= set(s)
    assert s["per_fold"][0]["robot_selector"]["file"] == "robot_selector.npz"
    rows = json.loads((tmp_path / "work" / "fold0" / "result.json").read_text())["rows"]
    assert {r["robot_source"] for r in rows} == {"text-selector"}
    assert (tmp_path / "cv.png").is_file()


def _planned(i, steps):
    from ember_training.robot_selection.tasks import RobotTask

    return RobotTask(i, f"task {i}", (0,), tuple(steps))


def test_majority_plan_baseline_from_the_training_plans_only(tmp_path):
    """The plan baseline: per-position majority order/text/robot of the *training* plans, scored
    for every test task like a generated plan, and reported beside the model in the summary."""
    train = [_planned(0, [(1, "Survey from the air", 0), (2, "Carry supplies", 2)]),
             _planned(1, [(1, "Survey from the air", 2), (2, "Carry supplies", 2)]),
             _planned(2, [(1, "Map the site", 0), (3, "Report", 3)])]
    assert cv.majority_plan(train) == [(1, "Survey from the air", "drone"), (2, "Carry supplies", "wheeled")]
    test = [_planned(10, [(1, "Survey from the air", 0), (2, "Carry supplies", 3)]),
            _planned(11, [(1, "Dive", 4), (2, "Carry supplies", 2)])]
    b = cv.baseline_majority_plan(train, test)
    assert b["step_robot_accuracy"] == 0.5 and b["plan_rate"] == 1.0 and 0 < b["plan_bleu"] < 100
    # the test tasks' own plans never reach it: a different test split gives the same baseline plan
    assert cv.majority_plan(train) == cv.majority_plan(train[::-1])
    assert cv.majority_plan([_planned(0, [])]) == []
    model = {"exact_match": 0.5, "jaccard": 0.6, "top1_hit": 0.9, "micro_f1": 0.6, "macro_f1": 0.5,
             "step_robot_accuracy": 0.25, "plan_rate": 0.5, "plan_bleu": 10.0}
    fold = {"fold": 0, "bundle_mb": 1.0, "model": model,
            "baselines": {"always_drone": {k: 0.1 for k in cv.HEADLINE}, "majority_plan": b}}
    s = cv.summarise([fold], "c.yaml", "d.json", 5, 0, 160)
    assert s["baselines"]["majority_plan"]["step_robot_accuracy"]["mean"] == 0.5
    assert s["ratio_to_majority_plan"] == {"step_robot_accuracy": 0.5, "plan_bleu": pytest.approx(10.0 / b["plan_bleu"])}
    table = cv.format_summary(s)
    assert "majority plan" in table and "0.500 ± 0.000" in table.splitlines()[-3]
    assert cv.plot_summary(s, tmp_path / "cv.png").is_file()  # plan-only baseline: beside the plans, not the sets


def test_the_cv_summary_table_has_one_header_per_column_over_its_values():
    """Every column of the printed summary has its own header, separated from its neighbours and
    right-aligned over its values, with all four baselines and three ratios present (the header
    once read 'ratio/minilmratio/majority')."""
    stat = {"mean": 0.5, "std": 0.01}
    sets = {k: stat for k in cv.HEADLINE}
    plans = {"step_robot_accuracy": stat, "plan_rate": stat, "plan_bleu": {"mean": 51.822, "std": 11.336}}
    s = {"k": 5, "folds_run": [0, 1, 2, 3, 4], "model": {**sets, **plans},
         "baselines": {"tfidf_lr": sets, "minilm_knn": sets, "always_drone": sets, "majority_plan": plans}}
    for name in ("tfidf_lr", "minilm_knn", "majority_plan"):
        s[f"ratio_to_{name}"] = {k: 1.0 for k in s["baselines"][name]}
    header, *rows = cv.format_summary(s).splitlines()[2:]
    titles = ["metric", "model (INT8 bundle)", *(cv.BASELINE_NAMES[n] for n in cv.BASELINE_NAMES),
              "ratio/tfidf", "ratio/minilm", "ratio/majority"]
    ends, start = [], 0
    for title in titles:
        at = header.index(title, start)
        assert at == 0 or header[at - 1] == " ", f"{title!r} touches the column before it: {header!r}"
        start = at + len(title)
        ends.append(start)
    for row in rows:
        for end in ends[1:]:  # each value ends where its header ends (right-aligned), a blank after it
            assert row[end - 1] != " " and row[end:end + 1] in ("", " "), (row, end)
