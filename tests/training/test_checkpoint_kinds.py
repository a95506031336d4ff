"""Every kind of checkpoint ember-train writes loads with torch's safe unpickler (weights_only=True,
nothing allow-listed), resumes exactly and exports; checkpoints written before RNG states were
stored as plain data (numpy arrays in them) still load and resume exactly."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from ember_training.checkpoint_format import load_checkpoint
from ember_training.config import load_config
from ember_training.train_state import rng_state, set_rng_state, step_checkpoints
from ember_training.trainer import Trainer, stage_dir
from tests.model.test_checkpoint_safety import Payload

from .test_resume import _losses, _stage4_run_dir, _stage4_straight_and_stopped
from .training_helpers import quick_overrides, write_config


def _legacy_rng() -> dict:
    """The RNG state exactly as ember-train wrote it before (numpy's tuple with an ndarray)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _bare_load(path):
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
    return torch.load(path, map_location="cpu", weights_only=True)


def test_every_checkpoint_of_a_run_loads_with_the_bare_safe_unpickler(tiny_run):
    """Stage final.pt and step checkpoints (optimizer, scheduler, scaler, RNG, data position), and
    stages 3/4 with robot_thresholds and metrics: plain tensors/containers/str/int/float only."""
    paths = [p for k in range(1, 5) for p in [*step_checkpoints(stage_dir(tiny_run.out, k)),
                                              stage_dir(tiny_run.out, k) / "final.pt"]]
    assert len(paths) >= 8
    for path in paths:
        raw = _bare_load(path)
        assert {"optimizer", "scheduler", "rng", "data_position", "stage"} <= set(raw)
        ours = load_checkpoint(path)
        assert ours["step"] == raw["step"] and ours["data_position"] == raw["data_position"]
    for k in (3, 4):
        raw = _bare_load(stage_dir(tiny_run.out, k) / "final.pt")
        assert len(raw["robot_thresholds"]) == 5 and raw["metrics"]


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    """The saved RNG state restores torch, numpy (incl. a cached gaussian) and Python random exactly."""
    np.random.seed(4)
    np.random.standard_normal()  # numpy now holds a cached gaussian
    random.seed(5)
    torch.manual_seed(6)
    torch.save({"rng": [rng_state()]}, tmp_path / "r.pt")
    expected = (np.random.standard_normal(3), np.random.randint(0, 1 << 30, 3), random.random(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"][0])
    got = (np.random.standard_normal(3), np.random.randint(0, 1 << 30, 3), random.random(), torch.rand(3))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(expected, got, strict=True))


def test_legacy_checkpoint_with_numpy_rng_resumes_exactly(tiny_run, tmp_path):
    """A step checkpoint as the previous ember-train wrote it (numpy RNG state as an ndarray)
    still loads and resumes to the losses and weights of an uninterrupted run."""
    over = {**quick_overrides(steps=4, batch=4), "data.max_samples_per_dataset": 5, "train.checkpoint_every": 100}
    cfg, straight, broken = _stage4_straight_and_stopped(tiny_run, tmp_path, over, stop_at=2)
    [path] = step_checkpoints(stage_dir(broken, 4))
    ckpt = torch.load(path, weights_only=True)
    legacy = []
    for state in ckpt["rng"]:
        set_rng_state(state)
        legacy.append(_legacy_rng())
    ckpt["rng"] = legacy
    torch.save(ckpt, path)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert isinstance(load_checkpoint(path)["rng"][0]["numpy"][1], np.ndarray)
    Trainer(cfg, broken, resume=True).run([4])
    assert _losses(stage_dir(straight, 4)) == _losses(stage_dir(broken, 4))
    wa, wb = (load_checkpoint(stage_dir(d, 4) / "final.pt")["model"] for d in (straight, broken))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    _bare_load(stage_dir(broken, 4) / "final.pt")  # the resumed run writes the new, plain form


def test_recipe_and_stage4_checkpoints_export(tiny_run, tmp_path, monkeypatch):
    """The robot-selection recipe's final.pt (thresholds, metrics, robot selector) loads with the bare
    safe unpickler; it and stage 4's final.pt export to bundles carrying their thresholds."""
    from ember_training.export.cli import main as export_main
    from ember_training.robot_selection import recipe
    from tests.robot_selection.conftest import FakeTeacher

    out = tmp_path / "out"
    shutil.copytree(tiny_run.out, out, ignore=shutil.ignore_patterns("checkpoints"))
    over = quick_overrides()
    over["robot_selection"] = {"enabled": True, "steps": 2, "warmup_steps": 1, "batch_size": 4, "distill_batch_size": 4,
                               "variants_per_task": 1, "recombinations": 10, "generic_words": 50, "generic_phrases": 10,
                               "inner_folds": 2, "teacher_cache": None,
                               "selector": {"words": 100, "dim": 8, "steps": 3, "batch_size": 8,
                                            "variants_per_task": 1, "recombinations": 5, "phrases": 10}}
    monkeypatch.setattr(recipe, "MiniLMTeacher", FakeTeacher)
    Trainer(load_config(write_config(tmp_path / "r.yaml", over)), out, resume=True).run([4])
    final = out / "robot_selection" / "final.pt"
    raw = _bare_load(final)
    assert raw["stage"] == "robot_selection" and raw["robot_selector"] and len(raw["robot_thresholds"]) == 5
    torch.set_num_threads(1)
    for ckpt in (final, stage_dir(tiny_run.out, 4) / "final.pt"):
        bundle = tmp_path / f"bundle_{ckpt.parent.name}"
        args = ["--checkpoint", str(ckpt), "--output", str(bundle), "--precision", "fp32", "--verify-inputs", "1"]
        assert export_main(args) == 0
        meta = json.loads((bundle / "bundle.json").read_text())
        assert meta["robot_thresholds"] == pytest.approx(load_checkpoint(ckpt)["robot_thresholds"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_checkpoints_load_safely_and_resume(synth_dir, tmp_path):
    """On CUDA with fp16 autocast: the grad scaler state and the CUDA RNG states are plain data too,
    and a run interrupted at a step checkpoint resumes from it to its configured steps."""
    over = {**quick_overrides(steps=4), "train.precision": "fp16", "tracking.codecarbon": False}
    cfg = load_config(write_config(tmp_path / "c.yaml", over))
    first = Trainer(cfg, tmp_path / "out", synth_dir)
    first.ctx.device = torch.device("cuda")
    first.prepare()
    first.run_stage(1, stop_at=2)
    sdir = stage_dir(tmp_path / "out", 1)
    raw = _bare_load(step_checkpoints(sdir)[-1])
    assert raw["scaler"] and raw["scaler"]["scale"] > 0 and raw["rng"][0]["cuda"]
    resumed = Trainer(cfg, tmp_path / "out", synth_dir, resume=True)
    resumed.ctx.device = torch.device("cuda")
    assert [r.steps for r in resumed.run([1])] == [4]
    assert _bare_load(sdir / "final.pt")["step"] == 4


def _plant(path, marker) -> None:
    """Replace a real checkpoint by itself plus an object that runs code when unpickled."""
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "metrics": Payload(marker)}, path)


def test_ember_train_refuses_a_planted_previous_stage_checkpoint(tiny_run, tmp_path, capsys):
    """Stage 4 starts from stage 3's final.pt: a planted one ends ember-train in one line, nothing run."""
    from ember_training.cli.train import main

    run = _stage4_run_dir(tiny_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    _plant(stage_dir(run, 3) / "final.pt", marker)
    cfg = write_config(tmp_path / "c.yaml", quick_overrides())
    code = main(["--config", str(cfg), "--stage", "4", "--output-dir", str(run)])
    assert not marker.exists(), "ember-train ran the code stage 3's final.pt carries"
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("ember-train: refused") and "io.open" in err
    assert not (stage_dir(run, 4) / "final.pt").exists()


def test_resume_passes_over_a_planted_step_checkpoint(tiny_run, tmp_path, caplog):
    """The newest step checkpoint planted: --resume reports it and continues from the one before."""
    from ember_training.train_state import latest_checkpoint

    sdir = tmp_path / "stage"
    shutil.copytree(stage_dir(tiny_run.out, 1), sdir)
    older = step_checkpoints(sdir)[-1]
    newest = shutil.copy(older, sdir / "checkpoints" / "step_999999.pt")
    marker = tmp_path / "pwned"
    _plant(newest, marker)
    ckpt = latest_checkpoint(sdir)
    assert not marker.exists(), "--resume ran the code the newest step checkpoint carries"
    assert ckpt is not None and ckpt["path"] == str(older) and "refused" in caplog.text
