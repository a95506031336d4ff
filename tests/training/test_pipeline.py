"""The shared tiny 4-stage run: outputs per stage, every head trained, every config key used."""

from __future__ import annotations

import csv
import dataclasses
import json

import torch

from ember_training import config as config_mod
from ember_training.checkpoint_format import load_checkpoint
from ember_training.config import load_config
from ember_training.model import EmberVLM
from ember_training.model import config as model_config_mod
from ember_training.trainer import stage_dir


def test_every_stage_writes_checkpoint_metrics_plot_and_emissions(tiny_run):
    for k in range(1, 5):
        sdir = stage_dir(tiny_run.out, k)
        ckpt = load_checkpoint(sdir / "final.pt")
        assert ckpt["step"] == 2 and ckpt["stage"] == config_mod.STAGE_NAMES[k - 1]
        for key in ("optimizer", "scheduler", "rng", "data_position", "tokenizer", "config"):
            assert key in ckpt
        rows = [json.loads(line) for line in (sdir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2]
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
        assert (sdir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with (sdir / "emissions.csv").open() as f:
            emissions = list(csv.DictReader(f))
        assert emissions and emissions[-1]["country_iso_code"] == "USA"
    summary = json.loads((tiny_run.out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == [1, 2, 3, 4]
    assert (tiny_run.out / "tokenizer.json").is_file()


def test_stages_3_and_4_store_heldout_metrics_and_thresholds(tiny_run):
    for k in (3, 4):
        ckpt = load_checkpoint(stage_dir(tiny_run.out, k) / "final.pt")
        assert len(ckpt["robot_thresholds"]) == 5 and all(0 < t < 1 for t in ckpt["robot_thresholds"])
        assert 0.0 <= ckpt["metrics"][f"stage{k}_incident_accuracy"] <= 1.0
        assert json.loads((stage_dir(tiny_run.out, k) / "eval.json").read_text())["metrics"] == ckpt["metrics"]
    assert "stage4_generated_robot_exact_match" in load_checkpoint(stage_dir(tiny_run.out, 4) / "final.pt")["metrics"]


def test_stage2_used_the_teacher_file(tiny_run):
    rows = [json.loads(line) for line in (stage_dir(tiny_run.out, 2) / "metrics.jsonl").read_text().splitlines()]
    assert all(r["distilled_tokens"] > 0 and r["distill"] > 0 for r in rows)


def _changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in after if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_every_head_is_trained_by_some_stage(tiny_run):
    states = [tiny_run.initial_state] + [load_checkpoint(stage_dir(tiny_run.out, k) / "final.pt")["model"] for k in range(1, 5)]
    trained_in = {
        "image_proj.": 1, "text_proj.": 1, "logit_scale": 1, "vision.": 1, "fusion.": 1,
        "heads.robot.": 3, "heads.confidence.": 3, "heads.incident.": 3, "heads.place.": 3, "reasoning.": 3,
    }
    for prefix, k in trained_in.items():
        assert _changed(states[k - 1], states[k], prefix), f"{prefix} not updated by stage {k}"
    # heads are not in the loss of stages 1 and 2: untouched there; stage 4 keeps training them
    for k in (1, 2):
        assert not _changed(states[k - 1], states[k], "heads."), f"stage {k} moved the heads"
    for prefix in ("heads.robot.", "heads.confidence.", "heads.incident.", "heads.place.", "reasoning."):
        assert _changed(states[3], states[4], prefix)
    # and every parameter changed in at least one stage
    model = EmberVLM(load_config(tiny_run.config).model)
    unchanged = [n for n, _ in model.named_parameters()
                 if all(torch.equal(states[i][n], states[i + 1][n]) for i in range(4))]
    assert not unchanged


def test_every_config_key_is_read_by_code(tiny_run):
    classes = [c for mod in (config_mod, model_config_mod) for c in vars(mod).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == mod.__name__]
    expected = {(c.__name__, f.name) for c in classes for f in dataclasses.fields(c)
                if f.init and f.name != "source" and c is not config_mod.StageCommon}
    # the stage classes inherit StageCommon's fields: they are checked on the subclasses
    missing = sorted(expected - tiny_run.reads)
    assert not missing, f"config keys never read by training code: {missing}"


def test_teacher_cli_from_a_checkpoint(tiny_run, tmp_path, capsys):
    from ember_training.cli.data import main as data_main
    from ember_training.distill import TeacherLogits
    from ember_training.tokenizer import load_tokenizer

    out = tmp_path / "teacher.npz"
    ckpt = stage_dir(tiny_run.out, 2) / "final.pt"
    assert data_main(["teacher", "--checkpoint", str(ckpt), "--data-dir", str(tiny_run.out / "data"),
                      "--out", str(out), "--k", "4"]) == 0
    teacher = TeacherLogits(out, load_tokenizer(tiny_run.out / "tokenizer.json"))
    assert len(teacher) > 0 and teacher.k == 4
    assert "wrote teacher logits" in capsys.readouterr().out
