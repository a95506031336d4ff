"""`make bundle` (ember_training.bundle_build): checkpoint choice, thresholds carried over, caching."""

from __future__ import annotations

import json
import os

from ember_training.bundle_build import find_checkpoint, main
from ember_training.checkpoint_format import save_checkpoint
from ember_training.testing import tiny_corpus, tiny_model
from ember_training.tokenizer import train_bpe
from tests.conftest import ROOT


def test_bundle_build_picks_robot_selection_and_caches(tmp_path, shared_data, capsys):
    model, tok = tiny_model(), train_bpe(tiny_corpus(), 512)
    run = tmp_path / "run"
    cfg = {"model": model.config.to_dict(), "data": {"max_prompt_tokens": 64}}
    save_checkpoint(run / "stage4_reasoning" / "final.pt", model, cfg, tok, 10)
    assert find_checkpoint(run) == run / "stage4_reasoning" / "final.pt"
    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7]
    best = save_checkpoint(
        run / "robot_selection" / "final.pt", model, cfg, tok, 12,
        extra={"robot_thresholds": thresholds, "metrics": {"robot_f1": 0.5}},
    )
    assert find_checkpoint(run) == best

    out = tmp_path / "bundle"
    args = ["--output", str(out), "--run-dir", str(run), "--calibration-images", str(shared_data / "incidents" / "images")]
    assert main(args) == 0
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["robot_thresholds"] == thresholds and meta["metrics"] == {"robot_f1": 0.5}
    assert meta["max_prompt_tokens"] == 64 and meta["source"]["step"] == 12
    assert meta["calibration"].endswith("images")
    built = (out / "bundle.json").stat().st_mtime_ns

    capsys.readouterr()
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert (out / "bundle.json").stat().st_mtime_ns == built

    os.utime(best)  # a newer checkpoint: exported again
    assert main(args) == 0
    assert (out / "bundle.json").stat().st_mtime_ns > built


def test_demo_run_is_current_only_for_the_same_complete_config(tmp_path):
    from ember_training.bundle_build import INPUTS_FILE, config_fingerprint, run_is_current

    config = tmp_path / "a.yaml"
    config.write_text("extends: " + str(ROOT / "config" / "train" / "tiny.yaml") + "\n")
    run = tmp_path / "run"
    run.mkdir()
    assert not run_is_current(run, config)  # nothing recorded
    record = {"config": str(config), "config_fingerprint": config_fingerprint(config), "complete": False}
    (run / INPUTS_FILE).write_text(json.dumps(record))
    assert run_is_current(run, config, complete=False) and not run_is_current(run, config)
    (run / INPUTS_FILE).write_text(json.dumps({**record, "complete": True}))
    assert run_is_current(run, config)
    config.write_text(config.read_text() + "train:\n  lr: 7.7e-4\n")  # the config changed: stale
    assert not run_is_current(run, config, complete=False)


def test_bundle_build_rebuilds_a_damaged_bundle(tmp_path, capsys):
    """A bundle whose files no longer match bundle.json (deleted, truncated) is not 'up to date'."""
    from ember.engine.bundle import load_bundle

    model, tok = tiny_model(), train_bpe(tiny_corpus(), 512)
    ckpt = save_checkpoint(tmp_path / "run" / "stage4_reasoning" / "final.pt", model, {"model": model.config.to_dict()}, tok, 3)
    out = tmp_path / "bundle"
    args = ["--output", str(out), "--checkpoint", str(ckpt), "--calibration-images", str(tmp_path / "none")]
    assert main(args) == 0
    (out / "decoder.onnx").unlink()  # a user's cleanup (or a full disk) took a file
    capsys.readouterr()
    assert main(args) == 0
    assert "up to date" not in capsys.readouterr().out
    load_bundle(out)  # complete again, hashes match
    with open(out / "vision.onnx", "r+b") as fh:  # truncated copy
        fh.truncate(100)
    assert main(args) == 0
    assert "up to date" not in capsys.readouterr().out
    load_bundle(out)


def test_bundle_build_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    """A truncated checkpoint (a copy cut short) or a non-checkpoint file: exit 2 with the reason,
    no traceback, and no bundle written."""
    model, tok = tiny_model(), train_bpe(tiny_corpus(), 300)
    good = save_checkpoint(tmp_path / "good.pt", model, {"model": model.config.to_dict()}, tok, 1)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = tmp_path / "other.pt"
    other.write_text("not a checkpoint")
    for ckpt in (cut, other):
        assert main(["--output", str(tmp_path / "bundle"), "--checkpoint", str(ckpt)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bundle_build: ") and str(ckpt) in err, err
    assert not (tmp_path / "bundle").exists()
