"""Small generated bags and image folders for the bag and eval tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from rosbags.typesys import Stores, get_typestore

from ember.bag.io import create_writer, reliable_qos
from tests.conftest import ROOT

KILTED = get_typestore(Stores.ROS2_KILTED)
START_NS = 1_700_000_000 * 10**9

# (incidents, robots) of the generated images, cycled
LABELS = [
    (["on fire", "with smoke"], ["drone", "humanoid"]),
    (["flooded"], ["drone", "underwater"]),
    (["collapsed", "damaged"], ["legged"]),
    (["car accident"], ["wheeled", "humanoid"]),
    ([], ["drone"]),
]


def write_labelled_images(folder: Path, n: int = 5, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """`n` PNG images (distinct random content) under `folder` and a labels.json beside them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(n):
        h, w = size  # smooth content (gradient + a disc) so that jpeg keeps it close
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.integers(0, 156, 3)
        rgb = np.stack([(base[c] + 100 * (xx if c % 2 else yy) / max(w, h)) for c in range(3)], -1).astype(np.uint8)
        cv2.circle(rgb, (int(rng.integers(0, w)), int(rng.integers(0, h))), max(4, h // 4),
                   tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
        key = f"img_{i:02d}.png"
        assert cv2.imwrite(str(folder / key), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        incidents, robots = LABELS[i % len(LABELS)]
        labels[key] = {"incidents": {name: 1 for name in incidents} | {"fog": 0}, "places": ["street"], "robots": robots}
    path = folder / "labels.json"
    path.write_text(json.dumps(labels))
    return path


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def string_bag(path: Path, storage: str, offsets_s: list[float], topic: str = "/chatter") -> list[str]:
    """A bag of std_msgs/String messages at the given offsets (s); returns the texts."""
    writer = create_writer(path, storage)
    conn = writer.add_connection(topic, "std_msgs/msg/String", typestore=KILTED, offered_qos_profiles=[reliable_qos()])
    texts = []
    for k, off in enumerate(offsets_s):
        text = f"message {k}"
        msg = KILTED.types["std_msgs/msg/String"](data=text)
        writer.write(conn, START_NS + round(off * 1e9), KILTED.serialize_cdr(msg, "std_msgs/msg/String"))
        texts.append(text)
    writer.close()
    return texts


def custom_type_bag(path: Path, storage: str, with_definition: bool = True) -> None:
    """A bag with one String topic and one topic of a type no installed package provides."""
    from rosbags.typesys import get_types_from_msg

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 teeth\nstring name", "acme_msgs/msg/Widget"))
    writer = create_writer(path, storage)
    text = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=KILTED)
    if with_definition:
        widget = writer.add_connection("/widgets", "acme_msgs/msg/Widget", typestore=store)
    else:
        widget = writer.add_connection("/widgets", "acme_msgs/msg/Widget", msgdef="", rihs01="RIHS01_" + "0" * 64)
    for k in range(3):
        t = START_NS + k * 100_000_000
        writer.write(text, t, KILTED.serialize_cdr(KILTED.types["std_msgs/msg/String"](data=f"m{k}"), "std_msgs/msg/String"))
        writer.write(widget, t, store.serialize_cdr(store.types["acme_msgs/msg/Widget"](teeth=k, name="w"), "acme_msgs/msg/Widget"))
    writer.close()


def cli(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m ember.<tool>.cli args...` in the repo root; capture output."""
    return subprocess.run([sys.executable, "-m", f"ember.{tool}.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def truncate(bag: Path, fraction: float = 0.5) -> Path:
    """Cut the bag's storage file to `fraction` of its size (a recording cut short)."""
    files = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    assert len(files) == 1, files
    size = files[0].stat().st_size
    with open(files[0], "r+b") as fh:
        fh.truncate(int(size * fraction))
    return bag


def labelled_image_bag(path: Path, storage: str, n: int, period_s: float = 0.25, malformed: tuple[int, ...] = (),
                       size: tuple[int, int] = (48, 64), seed: int = 1, compression: str | None = None,
                       second_connection: str | None = None) -> list[np.ndarray]:
    """A bag of `n` rgb8 images with ground truth (LABELS cycled); frames in `malformed` get a
    wrong `step` (undecodable); `compression` 'file' or 'message' zstd-compresses it as
    `ros2 bag record --compression-mode` does; `second_connection` (a message type) puts the odd
    frames on a second connection of the camera topic (PNG when CompressedImage), as merged bags
    have it. Returns the pixels."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

    from ember.bag.ground_truth import GroundTruth

    rng = np.random.default_rng(seed)
    if compression is None:
        writer = create_writer(path, storage)
    else:
        writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
        writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
        writer.open()
    cam = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=KILTED,
                                offered_qos_profiles=[reliable_qos()])
    cam2 = second_connection and writer.add_connection("/camera/image_raw", second_connection, typestore=KILTED,
                                                        offered_qos_profiles=[reliable_qos(depth=5)])
    gt = writer.add_connection("/ember/ground_truth", "std_msgs/msg/String", typestore=KILTED,
                               offered_qos_profiles=[reliable_qos()])
    T = KILTED.types
    pixels = []
    for k in range(n):
        t = START_NS + round(k * period_s * 1e9)
        h, w = size
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels.append(rgb)
        header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
                                          frame_id="camera")
        step = w * 3 - (1 if k in malformed else 0)
        img = T["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=step,
                                         data=rgb.reshape(-1))
        if cam2 and k % 2 and second_connection.endswith("CompressedImage"):
            png = np.frombuffer(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes(), np.uint8)
            msg = T[second_connection](header=header, format="rgb8; png compressed bgr8", data=png)
            writer.write(cam2, t, KILTED.serialize_cdr(msg, second_connection))
        else:
            writer.write(cam2 if cam2 and k % 2 else cam, t, KILTED.serialize_cdr(img, "sensor_msgs/msg/Image"))
        incidents, robots = LABELS[k % len(LABELS)]
        truth = GroundTruth(stamp_ns=t, source=f"frame{k}", incidents=incidents, robot_types=robots,
                            image_topic="/camera/image_raw")
        writer.write(gt, t, KILTED.serialize_cdr(T["std_msgs/msg/String"](data=truth.to_json()), "std_msgs/msg/String"))
    writer.close()
    return pixels
