"""Image-caption loaders: COCO captions and Flickr30k (results.csv or Karpathy's JSON)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from ember.prompting import EOS_TOKEN

from .common import (
    CAPTION_TASK,
    MALFORMED,
    DataError,
    LoadReport,
    Sample,
    clean_text,
    read_json,
    read_text,
)
from .images import ImageLookup

KARPATHY_TRAIN_SPLITS = ("train", "restval")


def _caption_sample(uid: str, source: str, image: Path, caption: str) -> Sample:
    return Sample(uid=uid, source=source, image=str(image), task=CAPTION_TASK, target=caption + EOS_TOKEN)


def load_coco_captions(annotations: Path, images: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """COCO `captions_*.json`: {"images": [{id, file_name}], "annotations": [{id, image_id, caption}]}."""
    report = LoadReport("coco")
    data = read_json(annotations, "coco")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"coco: {annotations} has no 'annotations' list")
    files: dict[int, str] = {}
    for img in data.get("images", []):
        if isinstance(img, dict) and isinstance(img.get("id"), int) and isinstance(img.get("file_name"), str):
            files[img["id"]] = img["file_name"]
    samples: list[Sample] = []
    ids = (a.get("image_id") if isinstance(a, dict) else None for a in data["annotations"])
    with ImageLookup(images, (files[i] for i in ids if isinstance(i, int) and i in files), remember=True) as lookup:
        _coco_rows(data["annotations"], files, lookup, report, samples, limit)
    report.kept = len(samples)
    return samples, report.emit()


def _coco_rows(annotations: list, files: dict[int, str], lookup: ImageLookup, report: LoadReport,
               samples: list[Sample], limit: int | None) -> None:
    for ann in annotations:
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate(ann, f"annotation {report.rows - 1}"):
            continue
        caption = clean_text(ann.get("caption")) if isinstance(ann, dict) else None
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if caption is None or not isinstance(image_id, int) or image_id not in files:
            report.skip(MALFORMED, f"annotation {report.rows - 1}")
            continue
        path, problem = lookup(files[image_id])  # each image checked once (remember)
        if problem:
            report.skip(problem, path)
            continue
        samples.append(_caption_sample(f"coco/{ann.get('id', report.rows)}", "coco", path, caption))


def load_flickr30k(captions: Path, images: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """Flickr30k captions from `results.csv` (image_name| comment_number| comment) or Karpathy JSON."""
    report = LoadReport("flickr30k")
    rows = list(_karpathy_rows(captions) if captions.suffix == ".json" else _results_csv_rows(captions))
    samples: list[Sample] = []
    with ImageLookup(images, (name for _, name, _, _ in rows if name is not None), remember=True) as lookup:
        _flickr_rows(rows, lookup, report, samples, limit)
    report.kept = len(samples)
    return samples, report.emit()


def _flickr_rows(rows: list[tuple[str, str | None, str | None, object]], lookup: ImageLookup, report: LoadReport,
                 samples: list[Sample], limit: int | None) -> None:
    for uid, name, caption, raw in rows:
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate(raw, uid):
            continue
        if name is None or caption is None:
            report.skip(MALFORMED, uid)
            continue
        path, problem = lookup(name)  # each image checked once (remember)
        if problem:
            report.skip(problem, path)
            continue
        samples.append(_caption_sample(f"flickr30k/{uid}", "flickr30k", path, caption))


def _results_csv_rows(path: Path) -> Iterator[tuple[str, str | None, str | None, object]]:
    """Yield (uid, image name, caption, the row's fields) from the pipe-separated results.csv; None
    marks bad fields."""
    text = read_text(path, "flickr30k")  # BOM, UTF-16, CRLF: as Windows tools save it
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="|")
    header = next(reader, None)
    if not header or [h.strip() for h in header[:3]] != ["image_name", "comment_number", "comment"]:
        raise DataError(f"flickr30k: {path} lacks the header 'image_name| comment_number| comment'")
    for i, row in enumerate(reader):
        if not row:
            continue
        if len(row) != 3:
            yield f"row{i}", None, None, row
            continue
        name = row[0].strip() or None
        yield f"{name}#{row[1].strip()}", name, clean_text(row[2]), row


def _karpathy_rows(path: Path) -> Iterator[tuple[str, str | None, str | None, object]]:
    """Yield (uid, image name, caption, the sentence with its image's name) from Karpathy's
    dataset_flickr30k.json (train splits)."""
    data = read_json(path, "flickr30k")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"flickr30k: {path} has no 'images' list")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("sentences"), list):
            yield f"img{i}", None, None, img
            continue
        if img.get("split", "train") not in KARPATHY_TRAIN_SPLITS:
            continue
        name = img.get("filename") if isinstance(img.get("filename"), str) else None
        for j, sent in enumerate(img["sentences"]):
            raw = sent.get("raw") if isinstance(sent, dict) else None
            yield f"{name}#{j}", name, clean_text(raw), (name, sent)
