"""ember-export as an ML engineer meets it: reproducible bundles, INT8 checks on images that were
not calibrated on (with a gate), calibration folders as users have them, re-export under a
running engine. Real exports of the tiny model through onnxruntime."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from ember.engine import EmberEngine
from ember_training.checkpoint_format import save_checkpoint
from ember_training.export import ExportOptions, export_bundle
from ember_training.export.calibration import load_folder, load_images
from ember_training.export.cli import main as export_main
from ember_training.testing import build_tiny_bundle, tiny_corpus, tiny_model
from ember_training.tokenizer import train_bpe


@pytest.fixture(scope="module")
def tok():
    return train_bpe(tiny_corpus(), 512)


@pytest.fixture(scope="module")
def ckpt(tok, tmp_path_factory):
    model = tiny_model(seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    return save_checkpoint(path, model, {"model": model.config.to_dict(), "name": "tiny"}, tok, 1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny graphs: one thread is much faster on a busy machine
    yield
    torch.set_num_threads(threads)


def _photos(folder, n: int, seed: int = 0, size: tuple[int, int] = (48, 64)) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), rng.integers(0, 256, (*size, 3), np.uint8))


def test_same_checkpoint_exports_byte_identical_bundles(tok, tmp_path, monkeypatch):
    """Two exports of one model (SOURCE_DATE_EPOCH set, as reproducible builds do) give the same
    bytes in every file, bundle.json included, so bundles can be diffed, cached and signed."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    _photos(tmp_path / "calib", 6)
    opts = ExportOptions(calibration_images=tmp_path / "calib", num_calibration=4, verify_inputs=2, verify_steps=3)
    for name in ("a", "b"):
        export_bundle(tiny_model(seed=0), tok, tmp_path / name, opts, {"config_name": "tiny", "step": 1})
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert json.loads((tmp_path / "a" / "bundle.json").read_text())["created"] == "2026-01-01T00:00:00+00:00"


def test_int8_checks_run_on_images_not_calibrated_on_and_show_selection_and_generation(ckpt, tmp_path, capsys):
    """The INT8 checks used to run on the calibration images themselves (ranges fitted to them);
    now on the folder's other images, topped up with generated scenes, and bundle.json says how
    many of each, how many calibrated, and how often robot selection, the top incident and the
    whole greedy generation agree."""
    _photos(tmp_path / "eight", 8)
    out = tmp_path / "bundle"
    args = ["--checkpoint", str(ckpt), "--output", str(out), "--calibration-images", str(tmp_path / "eight")]
    assert export_main(args) == 0
    checks = json.loads((out / "bundle.json").read_text())["export_checks"]
    assert checks["calibration_images"] == 6 and checks["verify_images"] == {"held_out": 2, "generated": 1}
    for key in ("int8_robot_selection_agreement", "int8_incident_top1_agreement", "int8_generation_agreement",
                "int8_generation_matching_prefix", "int8_top1_agreement"):
        assert 0.0 <= checks[key] <= 1.0, key
    assert checks["int8_gates"] == {"min_int8_top1_agreement": 0.8, "max_int8_score_drift": 0.25}
    printed = capsys.readouterr().out
    assert "INT8 vs FP32 on 3 image(s) not calibrated on (2 from the folder, 1 generated; calibrated on 6)" in printed
    assert "robot selection" in printed and "export took" in printed

    # a folder of 20: 16 calibrate, 3 held out; none of the held-out images is a calibration one
    _photos(tmp_path / "twenty", 20)
    folder = load_folder(tmp_path / "twenty", 16, 3)
    assert len(folder.calibration) == 16 and len(folder.held_out) == 3
    calib = {im.tobytes() for im in folder.calibration}
    assert not any(im.tobytes() in calib for im in folder.held_out)


def test_int8_gate_refuses_in_one_line_and_keeps_the_old_bundle(ckpt, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = (out / "bundle.json").read_bytes()
    rc = export_main(["--checkpoint", str(ckpt), "--output", str(out), "--max-int8-score-drift", "0"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ember-export: error: INT8 model disagrees with FP32 (robot score drift 0.0"), err
    assert "> 0.0" in err and "--calibration-images" in err and "no bundle written" in err
    assert (out / "bundle.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging left
    with pytest.raises(SystemExit):
        export_main(["--checkpoint", str(ckpt), "--output", str(out), "--min-int8-top1-agreement", "1.5"])
    assert "must be in [0, 1]" in capsys.readouterr().err


def test_calibration_folders_as_users_have_them(ckpt, tmp_path, capsys, caplog):
    """Grayscale, RGBA and 16-bit PNGs, copies of one photo, a 1x1 and a 10x2000 image, a 3000x4000
    JPEG, a text file and a broken '.jpg' -> distinct 8-bit RGB images, copies and broken files
    skipped and counted; a folder with fewer images than --num-calibration says so in bundle.json."""
    rng = np.random.default_rng(1)
    d = tmp_path / "mixed"
    d.mkdir()
    cv2.imwrite(str(d / "gray.png"), rng.integers(0, 256, (30, 40), np.uint8))
    cv2.imwrite(str(d / "rgba.png"), rng.integers(0, 256, (30, 40, 4), np.uint8))
    cv2.imwrite(str(d / "deep.png"), rng.integers(0, 65536, (30, 40, 3)).astype(np.uint16))
    photo = rng.integers(0, 256, (30, 40, 3), np.uint8)
    for i in range(3):
        cv2.imwrite(str(d / f"copy_{i}.png"), photo)
    cv2.imwrite(str(d / "dot.png"), rng.integers(0, 256, (1, 1, 3), np.uint8))
    cv2.imwrite(str(d / "wide.png"), rng.integers(0, 256, (10, 2000, 3), np.uint8))
    cv2.imwrite(str(d / "sub_big.jpg"), rng.integers(0, 256, (3000, 4000, 3), np.uint8))
    (d / "notes.txt").write_text("not an image")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 cut short")

    folder = load_folder(d, 16, 0, min_side=64)
    assert len(folder.calibration) == 7  # gray, rgba, deep, one copy, dot, wide, big
    assert all(im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8 for im in folder.calibration)
    assert folder.duplicates == 2 and [p.name for p in folder.unreadable] == ["broken.jpg"]
    assert max(im.shape[0] for im in folder.calibration) < 3000  # the big JPEG decoded at reduced scale
    assert len(load_images(d, 16)) == 7

    one = tmp_path / "one"
    _photos(one, 1)
    out = tmp_path / "bundle"
    args = ["--checkpoint", str(ckpt), "--output", str(out), "--calibration-images", str(one),
            "--num-calibration", "100"]
    assert export_main(args) == 0
    checks = json.loads((out / "bundle.json").read_text())["export_checks"]
    assert checks["calibration_images"] == 1 and checks["verify_images"] == {"held_out": 0, "generated": 3}
    assert "1 calibration image(s) (asked for 100; the folder has 1 image file(s))" in caplog.text  # a warning

    for bad in ("empty", "junk"):
        (tmp_path / bad).mkdir()
    (tmp_path / "junk" / "fake.png").write_text("html error page")
    for bad in ("empty", "junk"):
        args[args.index("--calibration-images") + 1] = str(tmp_path / bad)
        assert export_main(args) == 2
        err = capsys.readouterr().err
        assert "ember-export: error: no readable images" in err, err
    assert "fake.png" in err  # says which file did not decode


def test_running_engine_keeps_its_model_when_the_bundle_is_replaced(tiny_bundle, tok, tmp_path):
    """Re-exporting over the bundle a robot's engine runs: the running engine keeps analysing with
    the model it loaded; an engine started afterwards loads the new one whole."""
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    running = EmberEngine(out)
    image = np.full((64, 64, 3), 90, np.uint8)
    before = running.analyze(image, "Check the bridge.", max_new_tokens=4)
    build_tiny_bundle(out, precision="fp32", seed=3)
    after = running.analyze(image, "Check the bridge.", max_new_tokens=4)
    assert after.text == before.text and after.model_version == "tiny-random-int8"
    assert EmberEngine(out).model_version == "tiny-random-fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
