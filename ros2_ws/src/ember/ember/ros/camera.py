"""`ember-camera`: a camera publisher for demos and tests, replaying images or a video.

    ember-camera --images DIR --rate 2 --topic /drone_1/camera/image_raw
    ember-camera --video clip.mp4 --rate 30 --topic camera/image_raw/compressed --format jpeg

Also a ROS node (`CameraNode`, executable `ember-camera` in fleet.launch.py) with the same
settings as parameters: images, video, rate_hz, topic, format (raw|jpeg), frame_id, loop,
count (stop after this many frames; 0 = no limit). `ros2 param set` changes rate_hz and
frame_id; the others are read-only. Publishes with sensor-data QoS, depth 1; every frame is
stamped with the publish time and carries `frame_id`. Under use_sim_time the rate and the
stamps are simulated time, as a simulator's camera: a paused simulation publishes nothing, and
a /clock jumping back (a reset) restarts the period from the new time.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image

from ember.ros import runtime
from ember.ros.conversions import numpy_to_image, rgb_to_compressed
from ember.ros.qos import CAMERA_QOS
from ember.ros.spinning import exit_now, spin_nodes, stopped_by_signal

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def load_images(directory: str | Path) -> list[tuple[str, np.ndarray]]:
    """(file name, uint8 RGB) of every image in `directory`, sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"image directory {d} does not exist")
    images = []
    for f in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{f} is not a readable image")
        images.append((f.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {d}")
    return images


def _check_parameters(params: list[Parameter]) -> SetParametersResult:
    """Refuse a rate_hz that is not a finite number > 0 and a negative count (start and run time)."""
    for prm in params:
        if prm.name == "rate_hz" and not (math.isfinite(prm.value) and prm.value > 0):
            return SetParametersResult(successful=False, reason=f"rate_hz must be a finite number > 0, not {prm.value:g}")
        if prm.name == "count" and prm.value < 0:
            return SetParametersResult(successful=False, reason=f"count must be >= 0 (0: no limit), not {prm.value}")
    return SetParametersResult(successful=True)


class CameraNode(Node):
    """Publishes images from a directory (each encoded once) or frames of a video at a fixed rate."""

    def __init__(self, node_name: str = "camera", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        ro = runtime.read_only
        self.add_on_set_parameters_callback(_check_parameters)  # before declaring: a params file is checked too
        self.declare_parameters("", [
            ("images", "", ro("directory of images to replay")),
            ("video", "", ro("video file to replay")),
            ("rate_hz", 1.0, ParameterDescriptor(description="frames per second, finite and > 0")),
            ("topic", "camera/image_raw", ro("topic to publish on")),
            ("format", "raw", ro("raw (sensor_msgs/Image) or jpeg (CompressedImage)")),
            ("frame_id", "camera", ParameterDescriptor(description="header.frame_id of every frame")),
            ("loop", True, ro("start over at the end")),
            ("count", 0, ro("stop after this many frames (>= 0); 0 = no limit")),
        ])
        prm = self._param
        images, video, rate, topic = prm("images"), prm("video"), float(prm("rate_hz")), prm("topic")
        self._format, self._loop, self._count = prm("format"), bool(prm("loop")), int(prm("count"))
        if bool(images) == bool(video):
            raise ValueError("give exactly one of the parameters 'images' (a directory) or 'video' (a file)")
        if self._format not in ("raw", "jpeg"):
            raise ValueError(f"format must be raw or jpeg, not {self._format!r}")
        msg_type = CompressedImage if self._format == "jpeg" else Image
        self._pub = self.create_publisher(msg_type, topic, CAMERA_QOS)
        self._frames: list[Any] = []
        self._video: cv2.VideoCapture | None = None
        self._video_path = video
        if images:
            self._frames = [self._encode(rgb) for _, rgb in load_images(images)]
            source = f"{len(self._frames)} images from {images}"
        else:
            self._video = self._open_video()
            source = f"video {video}"
        self.published = 0
        self.finished = False
        self._index = 0
        self._frame_timer = self.create_timer(1.0 / rate, self._tick)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self.get_logger().info(f"publishing {source} at {rate:g} Hz on {self.resolve_topic_name(topic)} ({self._format})")

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_parameters_set(self, params: list[Parameter]) -> None:
        """A new rate_hz takes effect at once (frame_id is read at every frame)."""
        if any(p.name == "rate_hz" for p in params):
            self.destroy_timer(self._frame_timer)
            self._frame_timer = self.create_timer(1.0 / float(self._param("rate_hz")), self._tick)
            self.get_logger().info(f"rate now {self._param('rate_hz'):g} Hz")

    def _open_video(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self._video_path)
        if not cap.isOpened():
            raise ValueError(f"cannot open video {self._video_path}")
        return cap

    def _encode(self, rgb: np.ndarray) -> Any:
        return rgb_to_compressed(rgb, "jpeg") if self._format == "jpeg" else numpy_to_image(rgb, "rgb8")

    def _next_frame(self) -> Any | None:
        if self._video is None:
            if self._index >= len(self._frames):
                if not self._loop:
                    return None
                self._index = 0
            msg = self._frames[self._index]
            self._index += 1
            return msg
        ok, bgr = self._video.read()
        if not ok:
            if not self._loop:
                return None
            self._video.release()
            self._video = self._open_video()
            ok, bgr = self._video.read()
            if not ok:
                return None
        return self._encode(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _tick(self) -> None:
        if self.finished:
            return
        msg = self._next_frame() if not (self._count and self.published >= self._count) else None
        if msg is None:
            self.finished = True
            self.get_logger().info(f"done after {self.published} frames")
            return
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = str(self._param("frame_id"))
        self._pub.publish(msg)
        self.published += 1


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="ember-camera", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--images", help="directory of images to replay (sorted by name)")
    src.add_argument("--video", help="video file to replay")
    ap.add_argument("--rate", type=float, help="frames per second")
    ap.add_argument("--topic", help="topic to publish on (relative names use the node's namespace)")
    ap.add_argument("--format", choices=("raw", "jpeg"), help="sensor_msgs/Image (raw) or CompressedImage (jpeg)")
    ap.add_argument("--frame-id", help="header.frame_id of every frame")
    ap.add_argument("--no-loop", action="store_true", help="stop at the end instead of starting over")
    ap.add_argument("--count", type=int, help="stop after this many frames")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the camera until SIGINT/SIGTERM (or until --count / the end with --no-loop); exit 0."""
    argv = list(sys.argv if argv is None else argv)
    args = _parse(remove_ros_args(argv)[1:])
    overrides = {
        "images": args.images,
        "video": args.video,
        "rate_hz": args.rate,
        "topic": args.topic,
        "format": args.format,
        "frame_id": args.frame_id,
        "loop": False if args.no_loop else None,
        "count": args.count,
    }
    params = [Parameter(k, value=v) for k, v in overrides.items() if v is not None]
    with runtime.stop_request():  # for the whole life: a stop signal never raises KeyboardInterrupt here
        runtime.init(args=argv)
        try:
            node = CameraNode(parameter_overrides=params)
        except (ValueError, FileNotFoundError, ParameterException) as exc:
            print(f"ember-camera: {exc}", file=sys.stderr, flush=True)
            runtime.shutdown()
            sys.exit(2)
        print("READY", flush=True)
        try:
            _spin_until_finished(node)
        finally:
            node.destroy_node()
            runtime.shutdown()
    exit_now(0)


def _spin_until_finished(node: CameraNode) -> None:
    """Spin until SIGINT/SIGTERM, or until the node is done (--count, --no-loop)."""
    from rclpy.executors import SingleThreadedExecutor

    if not node._count and node._loop:
        spin_nodes([node], multi_threaded=False)
        return
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        with runtime.stop_request() as stop:
            while not node.finished and not stop.done():
                executor.spin_once(timeout_sec=0.1)  # steady time: also wakes under a paused sim clock
    except (KeyboardInterrupt, Exception) as exc:
        if not stopped_by_signal(exc, node.context):
            raise
    finally:
        executor.shutdown()


if __name__ == "__main__":
    main()
