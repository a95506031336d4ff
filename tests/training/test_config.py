"""Config files load strictly: unknown keys, wrong types and bad values name the key."""

from __future__ import annotations

import re

import pytest

from ember_training.cli.train import main as train_main
from ember_training.config import STAGE_NAMES, ConfigError, apply_overrides, load_config

from .training_helpers import TINY, write_config


@pytest.mark.parametrize("name", ["tiny", "small", "full"])
def test_shipped_configs_load(name):
    cfg = load_config(TINY.parent / f"{name}.yaml")
    assert [cfg.stages.get(s).steps > 0 for s in STAGE_NAMES] == [True] * 4
    assert cfg.stages.alignment.contrastive_weight == 0.5 and cfg.stages.alignment.caption_weight == 0.5
    assert (cfg.stages.instruct.sft_weight, cfg.stages.instruct.distill_weight) == (0.7, 0.3)
    assert cfg.stages.instruct.distill_temperature == 2.0
    assert (cfg.stages.incidents.ce_weight, cfg.stages.incidents.consistency_weight) == (0.6, 0.4)
    assert cfg.stages.reasoning.smoothness_weight == 0.1


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"train.lrr": 0.1}, "train.lrr"),
        ({"stages.incidents.ce_wieght": 0.6}, "stages.incidents.ce_wieght"),
        ({"data.paths.cocoo": "x"}, "data.paths.cocoo"),
        ({"model.d_modell": 64}, "d_modell"),
        ({"extra_section": {}}, "extra_section"),
        ({"train.batch_size": "sixteen"}, "train.batch_size"),
        ({"train.batch_size": 0}, "train.batch_size"),
        ({"train.precision": "fp8"}, "train.precision"),
        ({"train.betas": [0.9]}, "train.betas"),
        ({"stages.alignment.steps": 1.5}, "stages.alignment.steps"),
        ({"stages.reasoning.datasets": ["coco"]}, "stages.reasoning.datasets"),
        ({"data.augment": "yes"}, "data.augment"),
        ({"tracking.country_iso_code": "us"}, "tracking.country_iso_code"),
        ({"tokenizer.kind": "wordpiece"}, "tokenizer.kind"),
        ({"data.max_target_tokens": 4000}, "model.n_positions"),
        ({"model.n_heads": 3}, "model.d_model"),
        ({"stages.alignment.contrastive_weight": -0.5}, "stages.alignment.contrastive_weight"),
        ({"stages.incidents.confidence_weight": -1}, "stages.incidents.confidence_weight"),
        ({"stages.alignment.datasets": ["coco", "coco"]}, "stages.alignment.datasets"),
        ({"train.weight_decay": -0.1}, "train.weight_decay"),
        ({"train.lr": float("inf")}, "train.lr"),
        ({"train.grad_clip": float("nan")}, "train.grad_clip"),
        ({"stages.instruct.distill_temperature": "inf"}, "stages.instruct.distill_temperature"),
        ({"data.synth.scenes": 0}, "data.synth.scenes"),
        ({"data.synth.image_size": -5}, "data.synth.image_size"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, key):
    path = write_config(tmp_path / "bad.yaml", override)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(path)


def test_not_yaml_and_missing_sections(tmp_path):
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "nomodel.yaml").write_text("train: {}\n")
    with pytest.raises(ConfigError, match="missing section 'model'"):
        load_config(tmp_path / "nomodel.yaml")
    (tmp_path / "scalar.yaml").write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "scalar.yaml")


def test_yaml_float_strings_are_numbers(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", {"train.lr": "3e-4"}))
    assert cfg.train.lr == pytest.approx(3e-4)


def test_cli_reports_bad_config(tmp_path, capsys):
    path = write_config(tmp_path / "bad.yaml", {"train.lrr": 1})
    assert train_main(["--config", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "train.lrr" in capsys.readouterr().err


def test_print_params_last_line(capsys):
    from ember_training.model import EmberVLM

    assert train_main(["--config", str(TINY), "--print-params"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"total_params=(\d+) trainable_params=(\d+)", last)
    assert m
    model = EmberVLM(load_config(TINY).model)
    assert int(m.group(1)) == sum(p.numel() for p in model.parameters())
    assert int(m.group(2)) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_a_key_given_twice_is_an_error(tmp_path):
    """YAML keeps the last of two equal keys: an edited copy above the live one would be ignored."""
    text = TINY.read_text().replace("  lr: 1.0e-3\n", "  lr: 1.0e-3\n  lr: 5.0e-4\n", 1)
    assert text.count("lr: 5.0e-4") == 1
    (tmp_path / "twice.yaml").write_text(text)
    with pytest.raises(ConfigError, match="lr.*twice|twice.*lr"):
        load_config(tmp_path / "twice.yaml")


def test_an_empty_section_of_an_extending_config_keeps_the_parent_values(tmp_path):
    """`train:` with every key commented out is null in YAML: it overrides nothing (it used to
    replace the parent's whole section by the dataclass defaults, silently)."""
    (tmp_path / "child.yaml").write_text(f"extends: {TINY}\ntrain:\n  # lr: 1.0e-4\nstages:\n  alignment:\n")
    cfg, parent = load_config(tmp_path / "child.yaml"), load_config(TINY)
    assert cfg.train == parent.train and cfg.stages == parent.stages


def test_dotted_overrides_are_checked_like_the_yaml():
    """`--set` overrides (ember-eval robot-selection --cv) reach the config with the YAML's checks:
    ints widen to float, a new config comes back (the one given is left as it was), and a misspelt
    key, a wrong type or a value a section refuses is a ConfigError naming the key."""
    cfg = load_config(TINY)
    out = apply_overrides(cfg, {"robot_selection.steps": 7, "stages.reasoning.lr": 1, "robot_selection.selector.dim": 8})
    assert (out.robot_selection.steps, out.stages.reasoning.lr, out.robot_selection.selector.dim) == (7, 1.0, 8)
    assert isinstance(out.stages.reasoning.lr, float) and out.source == cfg.source
    assert cfg.robot_selection.steps != 7 and apply_overrides(cfg, {}) is cfg
    assert apply_overrides(cfg, {"robot_selection.steps": cfg.robot_selection.steps}) == cfg
    for overrides, message in [({"robot_selection.selector.step_head_c": "abc"}, "robot_selection.selector.step_head_c"),
                               ({"robot_selection.stepz": 3}, "unknown key(s) robot_selection.stepz"),
                               ({"robot_selection.selctor.dim": 8}, "unknown key robot_selection.selctor"),
                               ({"nosection.x": 1}, "unknown key nosection"),
                               ({"train.batch_size": 0}, "train.batch_size")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            apply_overrides(cfg, overrides)
