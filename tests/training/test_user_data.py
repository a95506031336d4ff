"""A user's own data, as people really hand it over: files saved by Windows tools (UTF-8 BOM, CRLF,
backslash paths), label names in another case, photos of every size and mode, a truncated file.
Each loader must read what is meant, skip (and say) what is not, and never end in a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ember.labels import incident_index, place_index
from ember_training.checkpoint_format import load_checkpoint, model_from_checkpoint
from ember_training.data import images as images_mod
from ember_training.data.captions import load_coco_captions, load_flickr30k
from ember_training.data.common import MISSING_IMAGE, UNKNOWN_LABEL, DataError
from ember_training.data.dataset import ImageSpec, StageDataset
from ember_training.data.images import augment, read_rgb, to_tensor_array
from ember_training.data.incidents import load_incidents
from ember_training.data.instruct import load_llava
from ember_training.data.robot_selection import load_robot_single
from ember_training.tokenizer import build_tokenizer

BOM = "\ufeff"


def _photo(path: Path, h: int, w: int, seed: int = 0) -> Path:
    """A smooth gradient with noise (JPEG-friendly, like a photo) written with OpenCV."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 128)], -1)
    img = (img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def test_bom_and_crlf_files_load(tmp_path):
    """Notepad/Excel write a UTF-8 BOM (and CRLF): the files must read as without it."""
    _photo(tmp_path / "img/a.jpg", 16, 16)
    ann = {"a.jpg": {"incidents": {"flooded": 1}, "places": {"street": 1}}}
    (tmp_path / "inc.json").write_text(BOM + json.dumps(ann), encoding="utf-8")
    samples, _ = load_incidents(tmp_path / "inc.json", tmp_path / "img")
    assert len(samples) == 1

    csv_text = BOM + "image_name| comment_number| comment\r\na.jpg| 0| A flooded street.\r\n"
    (tmp_path / "results.csv").write_bytes(csv_text.encode("utf-8"))
    samples, _ = load_flickr30k(tmp_path / "results.csv", tmp_path / "img")
    assert [s.target.split("<")[0] for s in samples] == ["A flooded street."]

    rows = [{"instruction": "", "input": "Task: fly over the fire", "output": "Drone"}]
    (tmp_path / "single.json").write_text(BOM + json.dumps(rows), encoding="utf-8")
    samples, _ = load_robot_single(tmp_path / "single.json")
    assert len(samples) == 1

    # PowerShell 5's `>` and Out-File write UTF-16 with a BOM
    (tmp_path / "single16.json").write_text(json.dumps(rows), encoding="utf-16")
    samples, _ = load_robot_single(tmp_path / "single16.json")
    assert len(samples) == 1
    (tmp_path / "results16.csv").write_text(csv_text[1:], encoding="utf-16")
    samples, _ = load_flickr30k(tmp_path / "results16.csv", tmp_path / "img")
    assert len(samples) == 1


def test_incident_and_place_names_in_another_case_or_with_underscores(tmp_path):
    _photo(tmp_path / "img/a.jpg", 16, 16)
    ann = {"a.jpg": {"incidents": {"On Fire": 1, "with_smoke": 1, " Flooded ": 0}, "places": {"Forest_Road": 1}},
           "b.jpg": {"incidents": {"on fyre": 1}}}
    _photo(tmp_path / "img/b.jpg", 16, 16)
    (tmp_path / "inc.json").write_text(json.dumps(ann))
    samples, rep = load_incidents(tmp_path / "inc.json", tmp_path / "img")
    assert len(samples) == 1 and rep.skipped == {UNKNOWN_LABEL: 1}
    s = samples[0]
    assert s.incidents[incident_index("on fire")] == 1 and s.incidents[incident_index("with smoke")] == 1
    assert s.incidents[incident_index("flooded")] == 0 and s.places[place_index("forest road")] == 1


def test_windows_backslash_image_paths(tmp_path):
    """Annotation files written on Windows name images with backslashes."""
    img = _photo(tmp_path / "img/fire/a b é.jpg", 16, 16)
    ann = {"fire\\a b é.jpg": {"incidents": {"on fire": 1}}}
    (tmp_path / "inc.json").write_text(json.dumps(ann, ensure_ascii=False), encoding="utf-8")
    samples, rep = load_incidents(tmp_path / "inc.json", tmp_path / "img")
    assert rep.n_skipped == 0 and samples[0].image == str(img)

    coco = {"images": [{"id": 1, "file_name": "fire\\a b é.jpg"}], "annotations": [{"id": 5, "image_id": 1, "caption": "Fire."}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    samples, rep = load_coco_captions(tmp_path / "coco.json", tmp_path / "img")
    assert rep.n_skipped == 0 and samples[0].image == str(img)

    (tmp_path / "results.csv").write_text("image_name| comment_number| comment\nfire\\a b é.jpg| 0| Fire.\n")
    samples, rep = load_flickr30k(tmp_path / "results.csv", tmp_path / "img")
    assert rep.n_skipped == 0 and samples[0].image == str(img)

    llava = [{"id": "x", "image": "fire\\a b é.jpg", "conversations": [{"from": "human", "value": "What?"},
                                                                      {"from": "gpt", "value": "Fire."}]}]
    (tmp_path / "llava.json").write_text(json.dumps(llava))
    samples, rep = load_llava(tmp_path / "llava.json", tmp_path / "img")
    assert rep.n_skipped == 0 and samples[0].image == str(img)


def test_skip_summary_names_an_example_of_each_reason(tmp_path):
    """'unknown label 16' alone does not tell the user which name to fix."""
    _photo(tmp_path / "img/a.jpg", 16, 16)
    ann = {"a.jpg": {"incidents": {"on fyre": 1}}, "gone/b.jpg": {"incidents": {"flooded": 1}}}
    (tmp_path / "inc.json").write_text(json.dumps(ann))
    _, rep = load_incidents(tmp_path / "inc.json", tmp_path / "img")
    assert rep.skipped == {UNKNOWN_LABEL: 1, MISSING_IMAGE: 1}
    text = rep.summary()
    assert "'on fyre'" in text and str(tmp_path / "img/gone/b.jpg") in text, text


@pytest.mark.parametrize("shape", [(1, 200, 3), (1, 1, 3), (8, 8, 3)])
def test_sliver_and_tiny_images_augment(shape):
    """A 1-pixel-high strip (or a 1x1 tracking pixel saved by a failed download) once crashed the
    data loader inside cv2.resize: the random crop was 0 rows high."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = augment(np.full(shape, 100, np.uint8), rng)
        assert out.shape[0] >= 1 and out.shape[1] >= 1
        assert to_tensor_array(out, 64, [0.5] * 3, [0.2] * 3).shape == (3, 64, 64)


def _dataset(paths: list[Path], size: int = 64, augment_images: bool = False) -> StageDataset:
    from ember_training.data.common import Sample

    tok = build_tokenizer({"kind": "bpe", "vocab_size": 300, "path": None, "min_frequency": 1}, ["a picture"] * 4)
    samples = [Sample(uid=f"u{i}", source="coco", image=str(p), task="Describe the image.", target="a picture")
               for i, p in enumerate(paths)]
    return StageDataset(samples, tok, ImageSpec(size, [0.5] * 3, [0.25] * 3, augment_images), 16, 16, 0)


def test_truncated_image_is_one_clear_error(tmp_path):
    """A download cut off inside the JPEG header passes the signature check; decoding it mid-run
    must stop with a DataError naming the file (one line from ember-train), not a traceback."""
    good = _photo(tmp_path / "a.jpg", 64, 64)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    ds = _dataset([good, bad])
    ds[0]
    with pytest.raises(DataError, match=r"cannot decode image .*b\.jpg"):
        ds[1]


def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    """A 4000x6000 phone photo for a 64 px model was decoded at full size (and augmented as a
    288 MB float array) every time it was drawn; libjpeg can decode it at 1/8 scale directly."""
    big = _photo(tmp_path / "big.jpg", 1600, 2400)
    assert images_mod.jpeg_size(big) == (1600, 2400)
    assert images_mod.jpeg_size(_photo(tmp_path / "p.png", 10, 20)) is None
    reduced = read_rgb(big, min_side=128)
    assert reduced.shape == (200, 300, 3)
    assert read_rgb(big, min_side=1000).shape == (1600, 2400, 3)  # no reduction would keep 1000 px
    full = to_tensor_array(read_rgb(big), 64, [0.5] * 3, [0.25] * 3)
    item = _dataset([big])[0]["pixel_values"].numpy()
    assert np.abs(item - full).mean() < 0.02  # the same picture at 64 px (scale 1/0.25: < 0.5 grey level)


def test_bf16_checkpoint_loads_for_export(tmp_path):
    """A checkpoint whose weights were saved in bf16 (a GPU run that cast the model) loads into the
    float32 model: load_checkpoint maps every storage to the CPU, load_state_dict casts."""
    from ember_training.checkpoint_format import save_checkpoint
    from ember_training.config import load_config
    from ember_training.model import EmberVLM

    from .training_helpers import TINY

    cfg = load_config(TINY)
    model = EmberVLM(cfg.model).to(torch.bfloat16)
    tok = build_tokenizer({"kind": "bpe", "vocab_size": 300, "path": None, "min_frequency": 1}, ["a"])
    save_checkpoint(tmp_path / "c.pt", model, cfg.to_dict(), tok, 3)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert {v.dtype for v in ckpt["model"].values() if v.is_floating_point()} == {torch.bfloat16}
    loaded, _ = model_from_checkpoint(ckpt)
    name, ref = next((n, v) for n, v in model.state_dict().items() if v.is_floating_point())
    got = loaded.state_dict()[name]
    assert got.dtype == torch.float32 and torch.equal(got, ref.float())


def test_cli_truncated_image_in_a_loader_worker_is_one_line(synth_dir, tmp_path, capsys):
    """With data.num_workers > 0 the DataLoader re-raises a worker's error with the worker's whole
    traceback in its message: ember-train still prints one line naming the file."""
    from ember_training.cli.train import main as train_main

    from .training_helpers import coco_with_truncated_images, quick_overrides, write_config

    data = coco_with_truncated_images(synth_dir, tmp_path / "data")
    over = {**quick_overrides(steps=2, batch=4), "stages.alignment.datasets": ["coco"], "data.val_fraction": 0.0,
            "data.num_workers": 1, "tracking.codecarbon": False, "tracking.plots": False}
    cfg = write_config(tmp_path / "c.yaml", over)
    assert train_main(["--config", str(cfg), "--stage", "1", "--data-dir", str(data),
                       "--output-dir", str(tmp_path / "out")]) == 1
    text = capsys.readouterr().err
    err = [line for line in text.splitlines() if line.startswith("ember-train:")]
    assert len(err) == 1 and "cannot decode image" in err[0] and "Traceback" not in text, text


def test_ctrl_c_ends_in_one_line_that_says_how_to_continue(synth_dir, tmp_path):
    """Ctrl-C during a stage: exit 130 and one line pointing at --resume, not a KeyboardInterrupt
    traceback from wherever the main thread happened to be (cv2.imread, a matmul, ...)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .training_helpers import quick_overrides, write_config

    over = {**quick_overrides(steps=500, batch=4), "stages.alignment.datasets": ["coco"], "data.val_fraction": 0.0,
            "tracking.codecarbon": False, "tracking.plots": False}
    cfg = write_config(tmp_path / "c.yaml", over)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ember_training.cli.train", "--config", str(cfg), "--stage", "1",
         "--data-dir", str(synth_dir), "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    first = out / "stage1_alignment/checkpoints/step_000002.pt"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("ember-train: interrupted"), err[-2000:]
    assert "--resume" in err.strip().splitlines()[-1]
