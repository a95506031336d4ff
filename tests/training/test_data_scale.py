"""Data loading at scale, structurally: the loaded rows live in a few numpy buffers (DataLoader workers
forked from the trainer would otherwise copy every per-row object they read), the rows and the digest are
those of the loaders' Samples, and the image checks on a thread pool give the serial verdicts, skips
and summary lines. Timings are in bench/data_scale.py."""

from __future__ import annotations

import gc
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.labels import INCIDENT_LABELS, PLACE_LABELS
from ember_training.data import images as images_mod
from ember_training.data.captions import load_coco_captions
from ember_training.data.common import MISSING_IMAGE, UNREADABLE_IMAGE
from ember_training.data.dataset import ImageSpec, StageDataset
from ember_training.data.images import ImageLookup, find_image
from ember_training.data.incidents import load_incidents
from ember_training.data.instruct import load_llava
from ember_training.data.robot_selection import load_robot_multi, load_robot_single
from ember_training.data.table import SampleTable
from ember_training.tokenizer import build_tokenizer

FIELDS = ("uid", "source", "image", "task", "target", "robot_set", "steps", "capabilities")


def _loaded(synth_dir: Path, shared_data: Path) -> list:
    """Samples of every kind: captions, instruction turns, incidents, robot rows with plans."""
    out = load_coco_captions(synth_dir / "coco/annotations/captions_train2017.json", synth_dir / "coco/train2017")[0]
    out += load_llava(synth_dir / "llava/llava_instruct_150k.json", synth_dir / "coco/train2017")[0]
    out += load_incidents(synth_dir / "incidents/multi_label_train.json", synth_dir / "incidents/images")[0]
    robots = shared_data / "robot_selection"
    out += load_robot_single(robots / "single_robot_selection.json")[0]
    out += load_robot_multi(robots / "multi_robot_selection_dataset.json")[0]
    return out


def _same(a, b) -> None:
    for name in FIELDS:
        assert repr(getattr(a, name)) == repr(getattr(b, name)), name
    for name in ("incidents", "places", "robots"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


def _old_digest(samples: list, pool: list) -> str:
    """StageDataset.digest as checkpoints before the table recorded it (over the list of Samples)."""
    h = hashlib.sha256()
    for part, rows in (("samples", samples), ("pool", pool)):
        h.update(f"{part}:{len(rows)}".encode())
        for s in rows:
            name = Path(s.image).name if s.image is not None else ""
            labels = b"".join(v.tobytes() if v is not None else b"-" for v in (s.incidents, s.places, s.robots))
            h.update(repr((s.uid, name, s.task, s.target, s.robot_set, s.steps)).encode() + labels)
    return h.hexdigest()


def test_table_rows_equal_the_loaded_samples(synth_dir: Path, shared_data: Path) -> None:
    """Every field of every row (types too: the digest is a repr) comes back as the loader made it, through
    take, slices and concat as well."""
    samples = _loaded(synth_dir, shared_data)
    assert {s.source for s in samples} == {"coco", "llava", "incidents", "robot_single", "robot_multi"}
    table = SampleTable.of(samples)
    assert len(table) == len(samples)
    for a, b in zip(samples, table, strict=True):
        _same(a, b)
    rows = [5, 0, len(samples) - 1, 5]
    for i, s in zip(rows, table.take(rows), strict=True):
        _same(samples[i], s)
    for a, b in zip(samples[3:40:7], table[3:40:7], strict=True):
        _same(a, b)
    joined = SampleTable.concat([table[:10], table[10:]])
    for a, b in zip(samples, joined, strict=True):
        _same(a, b)
    assert list(table.text_only()) == [s.image is None for s in samples]


def test_dataset_items_and_digest_are_those_of_the_sample_list(synth_dir: Path, shared_data: Path) -> None:
    """A StageDataset over the table gives the same items (pairing, stage-4 targets, pixels) as over the
    list of Sample objects it held before, and the digest checkpoints recorded before: a resume still
    finds its data unchanged."""
    samples = _loaded(synth_dir, shared_data)
    pool = [s for s in samples if s.source == "incidents"]
    tok = build_tokenizer({"kind": "bpe", "vocab_size": 400}, [s.task + s.target for s in samples])
    spec = ImageSpec(32, [0.5] * 3, [0.25] * 3, True)
    new = StageDataset(samples, tok, spec, 32, 48, 3, pool=pool, robot_targets=True, two_views=True)
    old = StageDataset(samples, tok, spec, 32, 48, 3, pool=pool, robot_targets=True, two_views=True)
    old.samples, old.pool = samples, pool  # the representation before
    assert isinstance(new.samples, SampleTable) and isinstance(new.pool, SampleTable)
    assert new.digest() == old.digest() == _old_digest(samples, pool)
    for epoch in (0, 1):
        new.set_epoch(epoch)
        old.set_epoch(epoch)
        for i in [*range(0, len(samples), 17), len(samples) - 1, len(samples) + 2]:  # the last: a sampler's copy
            a, b = new[i], old[i]
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], torch.Tensor):
                    assert torch.equal(a[key], b[key]), key
                elif isinstance(a[key], np.ndarray):
                    assert np.array_equal(a[key], b[key]), key
                else:
                    assert a[key] == b[key], key


def _reachable(obj: object) -> int:
    """Python objects reachable from `obj` (types, modules and ints left out: 20 is one shared object, 2000
    one per table)."""
    seen, todo = set(), [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, type | int) or type(o).__name__ == "module":
            continue
        seen.add(id(o))
        todo.extend(gc.get_referents(o))
    return len(seen)


def _incident_rows(n: int) -> list:
    from ember_training.data.common import Sample, label_vector

    out = []
    for i in range(n):
        inc = label_vector(len(INCIDENT_LABELS))
        inc[i % len(INCIDENT_LABELS)] = 1
        out.append(Sample(uid=f"incidents/{i}.jpg", source="incidents", image=f"/d/{i}.jpg", task="t", incidents=inc,
                          places=label_vector(len(PLACE_LABELS)) if i % 2 else None))
    return out


def test_the_table_keeps_no_per_row_python_objects() -> None:
    """20 rows or 2000: the same handful of Python objects (numpy buffers); a list of Samples holds
    several per row, each of whose pages a forked loader worker copies when it reads the row."""
    small, big = SampleTable.of(_incident_rows(20)), SampleTable.of(_incident_rows(2000))
    assert _reachable(small) == _reachable(big) < 40
    assert _reachable(_incident_rows(2000)) > 2000 * 5
    spec = ImageSpec(16, [0.5] * 3, [0.25] * 3, False)
    datasets = [StageDataset(_incident_rows(n), None, spec, 8, 8, 0, pool=_incident_rows(n)) for n in (20, 2000)]
    assert _reachable(datasets[0]) == _reachable(datasets[1])


def _photo(path: Path, seed: int) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def many_rows(tmp_path_factory) -> tuple[Path, Path, dict[str, list[str]]]:
    """500 incident rows in 5 folders; missing, empty and HTML images scattered among them."""
    root = tmp_path_factory.mktemp("many")
    bad: dict[str, list[str]] = {MISSING_IMAGE: [], UNREADABLE_IMAGE: []}
    ann = {}
    for i in range(500):
        name = f"c{i % 5}/{i:04d}.jpg"
        ann[name] = {"incidents": {INCIDENT_LABELS[i % 43]: 1}, "places": {PLACE_LABELS[i % 49]: 0}}
        path = root / "images" / name
        if i % 97 == 13:
            bad[MISSING_IMAGE].append(name)
        elif i % 89 == 7:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"" if i % 2 else b"<html>403 Forbidden</html>")
            bad[UNREADABLE_IMAGE].append(name)
        else:
            _photo(path, i)
    (root / "labels.json").write_text(json.dumps(ann))
    return root / "labels.json", root / "images", bad


@pytest.mark.parametrize("threads", [1, 4])
def test_bad_images_among_many_rows_are_skipped_and_counted(many_rows, monkeypatch, threads: int) -> None:
    """The image checks of a thread pool (or none) skip and count exactly the missing and unreadable
    images, with the serial loader's summary line and samples, also under a sample limit."""
    labels, images, bad = many_rows
    monkeypatch.setattr(images_mod, "CHECK_THREADS", threads)
    samples, report = load_incidents(labels, images)
    assert report.skipped == {reason: len(names) for reason, names in bad.items()}
    assert len(samples) == 500 - sum(report.skipped.values())
    skipped = {f"incidents/{n}" for names in bad.values() for n in names}
    assert [s.uid for s in samples] == [f"incidents/c{i % 5}/{i:04d}.jpg" for i in range(500)
                                        if f"incidents/c{i % 5}/{i:04d}.jpg" not in skipped]
    monkeypatch.setattr(images_mod, "CHECK_THREADS", 1)
    serial, serial_report = load_incidents(labels, images)
    assert report.summary() == serial_report.summary()
    assert "e.g. " in report.summary() and str(images / bad[MISSING_IMAGE][0]) in report.summary()
    for limit in (1, 150):
        monkeypatch.setattr(images_mod, "CHECK_THREADS", threads)
        got, rep = load_incidents(labels, images, limit)
        monkeypatch.setattr(images_mod, "CHECK_THREADS", 1)
        want, want_rep = load_incidents(labels, images, limit)
        assert [s.uid for s in got] == [s.uid for s in want] and len(got) == limit
        assert rep.summary() == want_rep.summary()


def test_image_lookup_answers_skipped_repeated_and_late_names(many_rows) -> None:
    """Names the loader skips, asks twice or asks out of the stream's order get find_image's verdict."""
    _, images, bad = many_rows
    names = [f"c{i % 5}/{i:04d}.jpg" for i in range(500)] + ["nowhere/x.jpg"]
    asked = names[::3] + [names[3], names[0], bad[MISSING_IMAGE][0], "nowhere/x.jpg", "never/listed.jpg"]
    with ImageLookup(images, names, threads=3, ahead=8) as lookup:
        got = [lookup(n) for n in asked]
    assert got == [find_image(images, n) for n in asked]
    checks: list[str] = []

    def counted(name: str):
        checks.append(name)
        return find_image(images, name)

    with ImageLookup(images, names, threads=3, ahead=8, lookup=counted, remember=True) as lookup:
        got = [lookup(n) for n in asked]
        first_pass = len(checks)
        got += [lookup(n) for n in asked]
    assert got == [find_image(images, n) for n in asked + asked]
    assert len(checks) == first_pass, "remember: a name answered once is not checked again"


def test_coco_annotation_with_a_list_image_id_is_a_malformed_row(tmp_path: Path) -> None:
    """`"image_id": [1]` (an unhashable value) is skipped as a malformed row, not a TypeError traceback."""
    _photo(tmp_path / "img/1.jpg", 0)
    data = {"images": [{"id": 1, "file_name": "1.jpg"}],
            "annotations": [{"id": 1, "image_id": [1], "caption": "A fire."}, {"id": 2, "image_id": 1, "caption": "A fire."}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    samples, report = load_coco_captions(tmp_path / "c.json", tmp_path / "img")
    assert [s.uid for s in samples] == ["coco/2"] and report.skipped == {"malformed row": 1}
