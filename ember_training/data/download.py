"""`ember-data download`: fetch the public datasets from their official sources, or report
what a data directory holds (`--check-only`, which never touches the network).

Layout written (what DataPaths expects by default):
    coco/annotations/captions_train2017.json, coco/train2017/, coco/train2014/
    flickr30k/dataset_flickr30k.json (Karpathy), flickr30k/flickr30k_images/ (by request)
    llava/llava_instruct_150k.json
    vqa/v2_OpenEnded_mscoco_train2014_questions.json, vqa/v2_mscoco_train2014_annotations.json
    incidents/<annotation json> (by request), incidents/images/<class>/<hash>.jpg (from its urls)
    robot_selection/single_robot_selection.json, multi_robot_selection_dataset.json
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("ember_training.data")

USER_AGENT = "ember-data/0.1"


@dataclass(frozen=True)
class Remote:
    """One downloadable file: url, where it lands (relative), and whether to unzip it there."""

    url: str
    dest: str
    unzip_to: str | None = None


@dataclass(frozen=True)
class Source:
    """A public dataset: files to fetch, paths that must exist, and what needs a human."""

    name: str
    remotes: tuple[Remote, ...]
    required: tuple[str, ...]
    manual: str = ""
    alternatives: tuple[tuple[str, ...], ...] = field(default_factory=tuple)


SOURCES: tuple[Source, ...] = (
    Source(
        "coco",
        (
            Remote("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                   "coco/annotations_trainval2017.zip", "coco"),
            Remote("http://images.cocodataset.org/zips/train2017.zip", "coco/train2017.zip", "coco"),
        ),
        ("coco/annotations/captions_train2017.json", "coco/train2017"),
    ),
    Source(
        "vqa",
        (
            Remote("https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_Questions_Train_mscoco.zip",
                   "vqa/v2_Questions_Train_mscoco.zip", "vqa"),
            Remote("https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_Annotations_Train_mscoco.zip",
                   "vqa/v2_Annotations_Train_mscoco.zip", "vqa"),
            Remote("http://images.cocodataset.org/zips/train2014.zip", "coco/train2014.zip", "coco"),
        ),
        ("vqa/v2_OpenEnded_mscoco_train2014_questions.json", "vqa/v2_mscoco_train2014_annotations.json",
         "coco/train2014"),
    ),
    Source(
        "llava",
        (Remote("https://huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K/resolve/main/llava_instruct_150k.json",
                "llava/llava_instruct_150k.json"),),
        ("llava/llava_instruct_150k.json", "coco/train2017"),
    ),
    Source(
        "flickr30k",
        (Remote("https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
                "flickr30k/caption_datasets.zip", "flickr30k"),),
        ("flickr30k/flickr30k_images",),
        manual="Flickr30k images are distributed on request: https://shannon.cs.illinois.edu/DenotationGraph/ "
        "(unpack them into flickr30k/flickr30k_images/; set data.paths.flickr30k_captions to "
        "flickr30k/dataset_flickr30k.json or to the results.csv that comes with the images)",
        alternatives=(("flickr30k/results.csv", "flickr30k/dataset_flickr30k.json"),),
    ),
    Source(
        "incidents",
        (),
        ("incidents/images",),
        manual="Incidents1M annotations (multi_label_train.json, ...) are distributed on request by the "
        "Incidents project: https://github.com/ethanweber/IncidentsDataset ; put the JSON into incidents/ and "
        "run `ember-data download --only incidents` again to fetch the images from their urls",
        alternatives=(("incidents/multi_label_train.json", "incidents/eccv_train.json"),),
    ),
    Source(
        "robot_selection",
        (),
        ("robot_selection/single_robot_selection.json", "robot_selection/multi_robot_selection_dataset.json"),
        manual="the robot-selection files of the EmberVLM project (MIT): copied from ../shared/data/robot_selection "
        "when that directory exists",
    ),
)


def check(data_dir: Path) -> dict[str, dict[str, bool]]:
    """{source: {path: present}} for every required path (and one of each alternative group)."""
    report: dict[str, dict[str, bool]] = {}
    for src in SOURCES:
        found = {p: (data_dir / p).exists() for p in src.required}
        for group in src.alternatives:
            hits = [p for p in group if (data_dir / p).exists()]
            found[" | ".join(group)] = bool(hits)
        report[src.name] = found
    return report


def format_report(data_dir: Path, report: dict[str, dict[str, bool]]) -> str:
    lines = [f"data directory: {data_dir}"]
    for name, paths in report.items():
        state = "present" if all(paths.values()) else "missing"
        lines.append(f"  {name:<16} {state}")
        lines += [f"      {'ok ' if ok else '-- '} {p}" for p, ok in paths.items()]
    return "\n".join(lines)


def fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream `url` to dest (via dest.part, renamed when complete)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(req, timeout=timeout) as resp, part.open("wb") as fh:
        shutil.copyfileobj(resp, fh, length=1 << 20)
    part.replace(dest)


def download_source(src: Source, data_dir: Path, shared_robot_dir: Path | None) -> None:
    """Fetch and unpack what is missing of one source; print what needs a human."""
    if src.name == "robot_selection":
        if shared_robot_dir and shared_robot_dir.is_dir():
            for f in ("single_robot_selection.json", "multi_robot_selection_dataset.json"):
                target = data_dir / "robot_selection" / f
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(shared_robot_dir / f, target)
        return
    for remote in src.remotes:
        dest = data_dir / remote.dest
        marker = dest.with_name(dest.name + ".unpacked")
        if marker.exists() or (dest.exists() and not remote.unzip_to):
            continue
        if not dest.exists():
            log.info("%s: fetching %s", src.name, remote.url)
            fetch(remote.url, dest)
        if remote.unzip_to:
            with zipfile.ZipFile(dest) as zf:
                zf.extractall(data_dir / remote.unzip_to)
            marker.write_text("unpacked\n")
            dest.unlink()
    if src.name == "incidents":
        fetch_incident_images(data_dir)
    if src.manual:
        log.info("%s: %s", src.name, src.manual)


def fetch_incident_images(data_dir: Path, limit: int | None = None, timeout: float = 10.0) -> tuple[int, int]:
    """Download the images of every Incidents1M annotation file in incidents/ from their urls.

    Many urls are dead: those are counted, and the loaders later skip their rows ("missing image").
    """
    ok = failed = 0
    for ann_path in sorted((data_dir / "incidents").glob("*.json")):
        ann = json.loads(ann_path.read_text())
        for key, row in ann.items():
            if limit is not None and ok + failed >= limit:
                return ok, failed
            dest = data_dir / "incidents/images" / key
            url = row.get("url") if isinstance(row, dict) else None
            if dest.exists() or not url:
                continue
            try:
                fetch(url, dest, timeout)
                ok += 1
            except OSError:
                failed += 1
    log.info("incidents: fetched %d images, %d urls failed", ok, failed)
    return ok, failed
