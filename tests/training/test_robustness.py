"""What a run does with awkward data and configs: a dataset smaller than a batch, unreadable image
files, and a resume whose config differs from the checkpoint's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ember_training.checkpoint_format import load_checkpoint
from ember_training.config import load_config
from ember_training.data.captions import load_coco_captions, load_flickr30k
from ember_training.data.common import UNREADABLE_IMAGE
from ember_training.data.incidents import load_incidents
from ember_training.data.instruct import load_llava, load_vqa
from ember_training.trainer import Trainer, TrainError, stage_dir

from .training_helpers import quick_overrides, write_config


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stage1_config(tmp_path: Path, **extra) -> Path:
    over = {**quick_overrides(steps=2, batch=4), "stages.alignment.datasets": ["coco"], "data.val_fraction": 0.0,
            "tracking.codecarbon": False, "tracking.plots": False, **extra}
    return write_config(tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml", over)


def test_dataset_smaller_than_the_batch_trains(synth_dir, tmp_path):
    """6 captions at batch 8: the sampler repeats them (its documented job); the run must not
    die before the first step (the freeze probe indexed past the dataset)."""
    cfg = load_config(_stage1_config(tmp_path, **{"data.max_samples_per_dataset": 6, "train.batch_size": 8}))
    out = tmp_path / "out"
    Trainer(cfg, out, synth_dir).run([1])
    assert load_checkpoint(stage_dir(out, 1) / "final.pt")["step"] == 2


def _break_images(images: Path, names: list[str]) -> None:
    for name in names:
        path = images / name
        path.write_bytes(b"" if len(name) % 2 else b"<html><body>404 Not Found</body></html>")


def test_unreadable_images_are_skipped_and_counted(synth_dir, tmp_path):
    """An empty file or an HTML page under an image's name (failed downloads) is skipped and
    counted at load time, not found by a crash hours into training (the same crash again on resume)."""
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    coco_ann, coco_img = data / "coco/annotations/captions_train2017.json", data / "coco/train2017"
    llava = data / "llava/llava_instruct_150k.json"
    flickr_csv, flickr_img = data / "flickr30k/results.csv", data / "flickr30k/flickr30k_images"
    vqa = (data / "vqa/v2_OpenEnded_mscoco_train2014_questions.json", data / "vqa/v2_mscoco_train2014_annotations.json",
           data / "coco/train2014")
    inc_ann, inc_img = data / "incidents/multi_label_train.json", data / "incidents/images"
    loaders = {
        "coco": lambda: load_coco_captions(coco_ann, coco_img),
        "llava": lambda: load_llava(llava, coco_img),  # LLaVA talks about the COCO images
        "flickr30k": lambda: load_flickr30k(flickr_csv, flickr_img),
        "vqa": lambda: load_vqa(*vqa),
        "incidents": lambda: load_incidents(inc_ann, inc_img),
    }
    before = {name: load() for name, load in loaders.items()}
    broken: set[str] = set()
    for samples, _ in before.values():
        for s in samples[:3]:  # the first images of each source: an empty file or an HTML page
            path = Path(s.image)
            path.write_bytes(b"" if len(broken) % 2 else b"<html><body>404 Not Found</body></html>")
            broken.add(str(path))
    for name, load in loaders.items():
        samples, report = load()
        lost = [s for s in before[name][0] if s.image in broken]
        assert lost, name
        rows = {s.uid.split("#")[0] for s in lost} if name == "llava" else {s.uid for s in lost}  # LLaVA: a sample per turn
        assert report.skipped[UNREADABLE_IMAGE] == len(rows), (name, report.summary())
        assert len(samples) == len(before[name][0]) - len(lost) and not {s.image for s in samples} & broken
        assert report.rows == before[name][1].rows and UNREADABLE_IMAGE in report.summary()


def test_resume_with_a_changed_config_is_refused(synth_dir, tmp_path):
    """A resumed stage would silently keep the checkpoint's learning rate (the scheduler's base
    lrs and the optimizer's groups are restored) and misplace its data position after a batch size
    change: such a resume stops naming the changed keys. Keys that cannot change the result
    (logging, progress bars, checkpoint cadence, workers) may change."""
    over = {"stages.alignment.steps": 4}
    out = tmp_path / "out"
    first = Trainer(load_config(_stage1_config(tmp_path, **over)), out, synth_dir)
    first.prepare()
    first.run_stage(1, stop_at=2)
    for changed, key in (({"train.lr": 5e-4}, "train.lr"), ({"stages.alignment.batch_size": 2},
                                                              "stages.alignment.batch_size")):
        cfg = load_config(_stage1_config(tmp_path, **over, **changed))
        with pytest.raises(TrainError, match=key.replace(".", r"\.")):
            Trainer(cfg, out, synth_dir, resume=True).run([1])
        assert not (stage_dir(out, 1) / "final.pt").exists()
    harmless = {"tracking.progress": True, "train.log_every": 2, "train.checkpoint_every": 3, "data.num_workers": 0}
    Trainer(load_config(_stage1_config(tmp_path, **over, **harmless)), out, synth_dir, resume=True).run([1])
    assert load_checkpoint(stage_dir(out, 1) / "final.pt")["step"] == 4


def test_resume_of_a_finished_stage_names_config_changes(synth_dir, tmp_path, caplog):
    """--resume over a finished stage keeps it; a changed config is named in a warning."""
    out = tmp_path / "out"
    Trainer(load_config(_stage1_config(tmp_path)), out, synth_dir).run([1])
    with caplog.at_level("WARNING", logger="ember_training.train"):
        Trainer(load_config(_stage1_config(tmp_path, **{"train.lr": 5e-4})), out, synth_dir, resume=True).run([1])
    assert "train.lr: 0.001 -> 0.0005" in caplog.text


def test_resume_over_a_truncated_final_checkpoint_is_an_error(synth_dir, tmp_path):
    """A final.pt cut short (an interrupted copy, a failed disk) is an error naming it, not
    'already complete' (the next stage would then fail on it, or export would)."""
    out = tmp_path / "out"
    cfg = load_config(_stage1_config(tmp_path))
    Trainer(cfg, out, synth_dir).run([1])
    final = stage_dir(out, 1) / "final.pt"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    with pytest.raises(TrainError, match="final.pt"):
        Trainer(cfg, out, synth_dir, resume=True).run([1])


def test_cli_reports_unusable_data_in_one_line(synth_dir, tmp_path, capsys):
    """A missing dataset file, or one whose every row is broken, stops ember-train with exit 1 and
    one line naming the dataset and the skip counts (not a traceback, and never training on nothing)."""
    from ember_training.cli.train import main as train_main

    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = _stage1_config(tmp_path)
    assert train_main(["--config", str(cfg), "--data-dir", str(empty), "--output-dir", str(tmp_path / "o1")]) == 1
    err = capsys.readouterr().err
    assert "ember-train: coco: file not found" in err and "Traceback" not in err

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    ann = data / "coco/annotations/captions_train2017.json"
    coco = json.loads(ann.read_text())
    for a in coco["annotations"]:
        a["caption"] = "   "
    ann.write_text(json.dumps(coco))
    n = len(coco["annotations"])
    assert train_main(["--config", str(cfg), "--data-dir", str(data), "--output-dir", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert f"ember-train: coco: 0 samples from {n} rows, skipped {n}" in err and "no usable training samples" in err
    assert not (tmp_path / "o2" / "stage1_alignment").exists()


def test_resume_on_changed_data_says_the_run_is_no_longer_exact(synth_dir, tmp_path, caplog):
    """A user fixes a caption (or adds rows) and resumes: the stage goes on, but the batches after
    the resume are not those of an uninterrupted run on either dataset. One warning says so and
    names the sample counts; a resume on the same data says nothing."""
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    over = {"stages.alignment.steps": 4}
    out = tmp_path / "out"
    first = Trainer(load_config(_stage1_config(tmp_path, **over)), out, data)
    first.prepare()
    first.run_stage(1, stop_at=2)
    assert load_checkpoint(next((stage_dir(out, 1) / "checkpoints").iterdir()))["data"]["samples"] > 0
    ann = data / "coco" / "annotations" / "captions_train2017.json"
    coco = json.loads(ann.read_text())
    coco["annotations"][0]["caption"] = "A corrected caption of the first image."
    ann.write_text(json.dumps(coco))
    with caplog.at_level("WARNING", logger="ember_training.train"):
        second = Trainer(load_config(_stage1_config(tmp_path, **over)), out, data, resume=True)
        second.prepare()
        second.run_stage(1, stop_at=3)
    warned = [r.getMessage() for r in caplog.records if "other data" in r.getMessage()]
    assert len(warned) == 1 and "stage 1" in warned[0], caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ember_training.train"):
        Trainer(load_config(_stage1_config(tmp_path, **over)), out, data, resume=True).run([1])
    assert "other data" not in caplog.text
    assert load_checkpoint(stage_dir(out, 1) / "final.pt")["step"] == 4
