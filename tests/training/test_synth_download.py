"""`ember-data synth` writes every format the loaders read; scenes carry labels visually;
`ember-data download --check-only` reports without any network access."""

from __future__ import annotations

import inspect
import socket
import urllib.request

import numpy as np
import pytest

from ember.labels import incident_index, place_index
from ember_training.cli.data import main as data_main
from ember_training.config import load_config
from ember_training.data import scenes, synth
from ember_training.data.build import DataDirs, load_source
from ember_training.data.download import SOURCES, check
from ember_training.data.scenes import RECIPES, draw_scene

from .training_helpers import TINY  # isort: skip


def test_synth_cli_writes_every_format(tmp_path, capsys):
    out = tmp_path / "d"
    assert data_main(["synth", "--out", str(out), "--scenes", "20", "--caption-images", "6", "--image-size", "64"]) == 0
    assert "wrote synthetic datasets" in capsys.readouterr().out
    cfg = load_config(TINY)
    dirs = DataDirs(out, out / "robot_selection")
    for name in ("coco", "flickr30k", "llava", "vqa", "incidents", "robot_single", "robot_multi"):
        samples, rep = load_source(name, cfg, dirs)
        assert samples and rep.n_skipped == 0, rep.summary()


def test_recipes_use_real_category_names():
    for r in RECIPES:
        for name in r.incidents:
            incident_index(name)
        for place in r.places:
            place_index(place)


def test_no_text_is_drawn_into_scenes():
    for module in (scenes, synth):
        src = inspect.getsource(module)
        assert "putText" not in src and "addText" not in src


def test_labels_are_not_given_away_by_global_colour():
    """Nearest-centroid on the mean colour of an image must not identify the scene type:
    the label lives in shapes and textures, drawn at random places and colours."""
    rng = np.random.default_rng(1)
    feats, labels = [], []
    for i, r in enumerate(RECIPES):
        for _ in range(8):
            img = draw_scene(r, r.places[int(rng.integers(len(r.places)))], rng, 64)
            feats.append(img.reshape(-1, 3).mean(0))
            labels.append(i)
    x, y = np.array(feats), np.array(labels)
    hits = 0
    for j in range(len(x)):
        keep = np.arange(len(x)) != j
        cents = np.array([x[keep & (y == c)].mean(0) for c in range(len(RECIPES))])
        hits += int(np.argmin(((cents - x[j]) ** 2).sum(1)) == y[j])
    assert hits / len(x) < 0.6
    # and two draws of the same recipe and place differ (randomness, not a template)
    a = draw_scene(RECIPES[0], RECIPES[0].places[0], np.random.default_rng(5), 64)
    b = draw_scene(RECIPES[0], RECIPES[0].places[0], np.random.default_rng(6), 64)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access during --check-only")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_download_check_only_never_touches_the_network(no_network, synth_dir, tmp_path, capsys):
    assert data_main(["download", "--data-dir", str(synth_dir), "--check-only"]) == 0
    out = capsys.readouterr().out
    assert all(f"{s.name}" in out for s in SOURCES) and "missing" not in out
    empty = tmp_path / "empty"
    assert data_main(["download", "--data-dir", str(empty), "--check-only"]) == 1
    out = capsys.readouterr().out
    assert "coco             missing" in out and "-- " in out
    assert not empty.exists()
    report = check(synth_dir)
    assert all(all(v.values()) for v in report.values())


def test_download_fetches_unpacks_and_fetches_incident_images(tmp_path):
    """The download path on file:// urls (no network here): streamed fetch, unzip, and
    Incidents1M images fetched from the urls of the annotation file (dead urls counted)."""
    import json
    import zipfile

    from ember_training.data.download import Remote, Source, download_source, fetch_incident_images

    src_dir = tmp_path / "remote"
    src_dir.mkdir()
    with zipfile.ZipFile(src_dir / "ann.zip", "w") as zf:
        zf.writestr("annotations/captions_train2017.json", "{}")
    data = tmp_path / "data"
    source = Source("coco", (Remote((src_dir / "ann.zip").as_uri(), "coco/ann.zip", "coco"),),
                    ("coco/annotations/captions_train2017.json",))
    download_source(source, data, None)
    assert (data / "coco/annotations/captions_train2017.json").read_text() == "{}"
    assert not (data / "coco/ann.zip").exists() and (data / "coco/ann.zip.unpacked").exists()
    (src_dir / "a.jpg").write_bytes(b"jpeg bytes")
    (data / "incidents").mkdir()
    (data / "incidents/multi_label_train.json").write_text(json.dumps({
        "flooded/a.jpg": {"incidents": {"flooded": 1}, "places": {}, "url": (src_dir / "a.jpg").as_uri()},
        "flooded/b.jpg": {"incidents": {"flooded": 1}, "places": {}, "url": (src_dir / "gone.jpg").as_uri()},
    }))
    assert fetch_incident_images(data) == (1, 1)
    assert (data / "incidents/images/flooded/a.jpg").read_bytes() == b"jpeg bytes"


def test_teacher_with_an_unusable_checkpoint_is_one_line(tmp_path, capsys):
    """A missing or damaged teacher checkpoint gave a traceback; now one line, exit 2."""
    bad = tmp_path / "final.pt"
    bad.write_bytes(b"not a checkpoint")
    for ckpt in (bad, tmp_path / "missing.pt"):
        rc = data_main(["teacher", "--checkpoint", str(ckpt), "--data-dir", str(tmp_path), "--out", str(tmp_path / "t.npz")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("ember-data teacher: "), err
