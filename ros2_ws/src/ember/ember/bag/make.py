"""`ember-bag make`: a rosbag2 of camera images plus ground truth, from image folders.

Each labelled image becomes one camera message (sensor_msgs/Image rgb8, or
sensor_msgs/CompressedImage jpeg/png with --compressed) and one ground-truth message on
/ember/ground_truth at the same timestamp; frames are 1/rate seconds apart from `start_ns`.
Messages are serialised by rosbags, so no ROS install is needed to make a bag.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.typesys import get_typestore

from ember.bag.errors import BagError
from ember.bag.ground_truth import (
    GROUND_TRUTH_TOPIC,
    GROUND_TRUTH_TYPE,
    GroundTruth,
    LabelledImage,
    read_labels,
)
from ember.bag.io import create_writer, reliable_qos
from ember.bag.types import DEFAULT_STORE

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
DEFAULT_START_NS = 1_704_067_200 * 10**9
"""2024-01-01T00:00:00Z: a fixed start keeps made bags reproducible (override with --start)."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class MakeResult:
    """What `make_bag` wrote."""

    path: Path
    frames: int
    skipped_missing: list[str]
    image_topic: str
    duration_s: float


_MAX_SEC = 2**31 - 1
"""builtin_interfaces/Time.sec is an int32."""


def _check_timing(rate_hz: float, start_ns: int) -> int:
    """The frame period in ns for `rate_hz`; BagError unless every frame gets a stamp of its own."""
    if not math.isfinite(rate_hz) or rate_hz <= 0:
        raise BagError(f"--rate must be a positive number of frames per second, got {rate_hz}")
    period_ns = round(1e9 / rate_hz)
    if period_ns < 1:
        raise BagError(f"--rate {rate_hz} Hz puts frames less than 1 ns apart: every frame would get the same "
                       "timestamp (ground truth and answers are matched by stamp)")
    if not 0 <= start_ns <= _MAX_SEC * 10**9:
        raise BagError(f"--start must be seconds since the epoch in 0..{_MAX_SEC} (int32 header stamps), "
                       f"got {start_ns / 1e9:.0f}")
    return period_ns


def _read_rgb(path: Path, max_side: int) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BagError(f"image {path} cannot be decoded")
    h, w = bgr.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _unlabelled(images: Path) -> list[LabelledImage]:
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return [LabelledImage(p, str(p.relative_to(images)), [], [], [], None, None) for p in files]


def collect(images: Sequence[Path], labels: Sequence[Path | None]) -> tuple[list[LabelledImage], list[str]]:
    """Labelled images of every (images dir, labels file) pair, in order; skipped keys."""
    if len(labels) not in (0, len(images)):
        raise BagError(f"give one --labels per --images ({len(images)} image dirs, {len(labels)} labels files)")
    rows: list[LabelledImage] = []
    skipped: list[str] = []
    for i, folder in enumerate(images):
        folder = Path(folder)
        if not folder.is_dir():
            raise BagError(f"images directory {folder} does not exist")
        label_file = labels[i] if labels else None
        if label_file is None:
            rows += _unlabelled(folder)
        else:
            got, missing = read_labels(folder, Path(label_file))
            rows += got
            skipped += [f"{folder}/{k}" for k in missing]
    if not rows:
        raise BagError("no image to put in the bag (no labelled image exists under the given directories)")
    return rows, skipped


def make_bag(
    out: Path,
    images: Sequence[Path],
    labels: Sequence[Path | None] = (),
    storage: str = "mcap",
    compressed: bool = False,
    rate_hz: float = 2.0,
    start_ns: int = DEFAULT_START_NS,
    max_side: int = 640,
    frame_id: str = "camera",
    image_topic: str | None = None,
    task: str | None = None,
) -> MakeResult:
    """Write the bag; `task` fills rows that have none. Returns what was written."""
    period_ns = _check_timing(rate_hz, start_ns)
    if max_side < 0:
        raise BagError(f"--max-side must be 0 (keep the size) or a positive number of pixels, got {max_side}")
    rows, skipped = collect(images, labels)
    last_ns = start_ns + (len(rows) - 1) * period_ns
    if last_ns // 10**9 > _MAX_SEC:
        raise BagError(f"--start/--rate put frame {len(rows) - 1} at {last_ns / 1e9:.0f} s since the epoch, past the "
                       f"largest header stamp ({_MAX_SEC} s, int32 seconds)")
    store = get_typestore(DEFAULT_STORE)
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    topic = image_topic or (COMPRESSED_TOPIC if compressed else IMAGE_TOPIC)
    Time, Header = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    writer = create_writer(out, storage)
    try:
        qos = [reliable_qos(depth=10)]
        cam = writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=qos)
        gt = writer.add_connection(GROUND_TRUTH_TOPIC, GROUND_TRUTH_TYPE, typestore=store, offered_qos_profiles=qos)
        for i, row in enumerate(rows):
            stamp = start_ns + i * period_ns
            header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)
            rgb = _read_rgb(row.path, max_side)
            if compressed:
                ok_enc, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok_enc:
                    raise BagError(f"cannot encode {row.path} as jpeg")
                msg = store.types[msgtype](header=header, format="jpeg", data=buf.reshape(-1))
            else:
                h, w = rgb.shape[:2]
                msg = store.types[msgtype](
                    header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3, data=rgb.reshape(-1)
                )
            writer.write(cam, stamp, store.serialize_cdr(msg, msgtype))
            truth = GroundTruth(
                stamp_ns=stamp,
                source=row.key,
                frame_id=frame_id,
                image_topic=topic,
                incidents=row.incidents,
                negatives=row.negatives,
                places=row.places,
                robot_types=row.robot_types,
                task=row.task if row.task is not None else task,
            )
            text = store.types[GROUND_TRUTH_TYPE](data=truth.to_json())
            writer.write(gt, stamp, store.serialize_cdr(text, GROUND_TRUTH_TYPE))
    except BaseException:
        # Drop the half-written bag so nothing mistakes it for a complete one.
        with suppress(Exception):
            writer.close()
        shutil.rmtree(out, ignore_errors=True)
        raise
    writer.close()
    return MakeResult(Path(out), len(rows), skipped, topic, (len(rows) - 1) * period_ns / 1e9)
