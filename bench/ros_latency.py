"""ROS latency benchmark (issue 5): camera publish -> IncidentAnalysis received, vs the engine itself.

    python bench/ros_latency.py [--bundle build/bundle | --tiny] [--frames 30] [--json PATH]

An incident node runs in its own process (max_rate 0, 1 thread). For each frame, in turn,
this process (a) times `EmberEngine.analyze` on the decoded image with the same bundle and
thread count (the baseline), then (b) publishes the frame as sensor_msgs/Image (rgb8) and
(c) as CompressedImage (JPEG) and times publish -> IncidentAnalysis received. One frame is in
flight at a time, so this is latency, not throughput. The ratios ROS p50 / engine p50 show
the ROS overhead (serialisation, DDS over loopback, decoding, the worker hand-off). Prints a
table and writes JSON (default bench/results/ros_latency.json). Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import machine, write_json

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "incidents" / "images"
DEFAULT_JSON = ROOT / "bench" / "results" / "ros_latency.json"
NS = "/bench_bot"


def _env() -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ["EMBER_REQUIRE_LOCAL_DDS"] = "1"
    # as ember-fleet does (config/fleet.yaml dds_profile): large raw frames over shared memory
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": statistics.median(values), "p95_ms": _pct(values, 0.95), "mean_ms": statistics.fmean(values)}


def _start_node(bundle: Path, tmp: Path) -> subprocess.Popen:
    import yaml

    params = {"robot_id": "bench_bot", "robot_type": "drone", "bundle": str(bundle), "threads": 1,
              "max_rate_hz": 0.0, "processing_delay_s": 0.0}
    pf = tmp / "params.yaml"
    pf.write_text(yaml.safe_dump({f"{NS}/incident_node": {"ros__parameters": params}}))
    log = tmp / "incident_node.log"
    with open(log, "w") as fh:  # a file, not a pipe: a full pipe would block the node
        proc = subprocess.Popen(
            [sys.executable, "-m", "ember.ros.incident_node", "--ros-args", "-r", f"__ns:={NS}", "--params-file", str(pf)],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "READY" in log.read_text().split():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"incident node did not start:\n{log.read_text()}")


def run(bundle: Path, frames: int) -> dict:
    """Measure; returns the result dict."""
    import cv2
    import rclpy
    from ember_msgs.msg import IncidentAnalysis
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, Image

    from ember.engine import EmberEngine
    from ember.ros import runtime
    from ember.ros.conversions import numpy_to_image, rgb_to_compressed
    from ember.ros.qos import CAMERA_QOS, REPORT_QOS

    photos = []
    for f in sorted(IMAGES.glob("*.jpg")):
        photos.append(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB))
    engine = EmberEngine(bundle, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        node_proc = _start_node(bundle, Path(tmp))
        runtime.init()
        node = rclpy.create_node("ros_latency_bench")
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        got: dict[int, tuple[float, IncidentAnalysis]] = {}
        node.create_subscription(IncidentAnalysis, f"{NS}/ember/incident", lambda m: got.setdefault(m.header.stamp.sec, (time.perf_counter(), m)), REPORT_QOS)
        raw_pub = node.create_publisher(Image, f"{NS}/camera/image_raw", CAMERA_QOS)
        jpg_pub = node.create_publisher(CompressedImage, f"{NS}/camera/image_raw/compressed", CAMERA_QOS)

        def spin_until(pred, timeout: float) -> bool:
            end = time.monotonic() + timeout
            while not pred() and time.monotonic() < end:
                ex.spin_once(timeout_sec=0.01)
            return pred()

        if not spin_until(lambda: raw_pub.get_subscription_count() and jpg_pub.get_subscription_count()
                          and node.count_publishers(f"{NS}/ember/incident"), 60):
            raise RuntimeError("incident node not discovered")
        engine_ms, raw_ms, jpg_ms, node_raw_ms, node_jpg_ms, lost = [], [], [], [], [], 0
        seq = 0

        def round_trip(pub, msg) -> tuple[float, float]:
            nonlocal seq, lost
            for _attempt in range(3):
                seq += 1
                msg.header.stamp.sec, msg.header.frame_id = seq, "bench"
                t0 = time.perf_counter()
                pub.publish(msg)
                if spin_until(lambda s=seq: s in got, 20):
                    t1, m = got[seq]
                    return (t1 - t0) * 1e3, m.latency_ms
                lost += 1  # best-effort camera QoS: a lost frame is retried, and counted
                if node_proc.poll() is not None:
                    raise RuntimeError(f"incident node exited ({node_proc.returncode}):\n{(Path(tmp) / 'incident_node.log').read_text()}")
            raise RuntimeError(f"3 frames in a row got no IncidentAnalysis:\n{(Path(tmp) / 'incident_node.log').read_text()}")

        for i in range(frames + 2):  # the first two are warm-up
            rgb = photos[i % len(photos)]
            raw, jpg = numpy_to_image(rgb, "rgb8"), rgb_to_compressed(rgb, "jpeg")
            t = time.perf_counter()
            engine.analyze(rgb)
            e = (time.perf_counter() - t) * 1e3
            r = round_trip(raw_pub, raw)
            j = round_trip(jpg_pub, jpg)
            if i < 2:
                continue
            engine_ms.append(e)
            raw_ms.append(r[0])
            node_raw_ms.append(r[1])
            jpg_ms.append(j[0])
            node_jpg_ms.append(j[1])
        ex.shutdown()
        node.destroy_node()
        runtime.shutdown()
        node_proc.send_signal(2)
        node_proc.wait(timeout=30)
    h, w = photos[0].shape[:2]
    res = {
        "engine_analyze": _summary(engine_ms),
        "ros_raw": _summary(raw_ms),
        "ros_jpeg": _summary(jpg_ms),
        "node_internal_raw": _summary(node_raw_ms),
        "node_internal_jpeg": _summary(node_jpg_ms),
        "lost_frames_retried": lost,
    }
    base = res["engine_analyze"]["p50_ms"]
    for k in ("ros_raw", "ros_jpeg", "node_internal_raw", "node_internal_jpeg"):
        res[k]["p50_ratio_vs_engine"] = res[k]["p50_ms"] / base
        res[k]["p95_ratio_vs_engine"] = res[k]["p95_ms"] / res["engine_analyze"]["p95_ms"]
    return {
        "benchmark": "ros_latency",
        "bundle": str(bundle),
        "model_version": engine.model_version,
        "frames": len(engine_ms),
        "image": f"{len(photos)} photos from ../shared/data/incidents/images, first {w}x{h}",
        "dds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", ""),
        **machine(),
        "results": res,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "build" / "bundle"))
    ap.add_argument("--tiny", action="store_true", help="build and use the tiny random-weight test bundle")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    args = ap.parse_args()
    _env()
    bundle = Path(args.bundle)
    if args.tiny:
        from ember_training.testing import build_tiny_bundle

        bundle = ROOT / "build" / "bench" / "tiny_bundle"
        if not (bundle / "bundle.json").is_file():
            build_tiny_bundle(bundle)
    if not (bundle / "bundle.json").is_file():
        sys.exit(f"no model bundle at {bundle}: run `make bundle` (or pass --bundle DIR / --tiny)")
    out = run(bundle, args.frames)
    r = out["results"]
    print(f"ROS latency, {out['frames']} frames, model {out['model_version']}, {out['image']}")
    print(f"{'path':<34}{'p50 ms':>9}{'p95 ms':>9}{'p50 x engine':>14}")
    rows = [
        ("engine.analyze (baseline)", "engine_analyze"),
        ("ROS Image -> IncidentAnalysis", "ros_raw"),
        ("ROS JPEG  -> IncidentAnalysis", "ros_jpeg"),
        ("  node receive->publish (Image)", "node_internal_raw"),
        ("  node receive->publish (JPEG)", "node_internal_jpeg"),
    ]
    for label, key in rows:
        ratio = r[key].get("p50_ratio_vs_engine", 1.0)
        print(f"{label:<34}{r[key]['p50_ms']:>9.1f}{r[key]['p95_ms']:>9.1f}{ratio:>13.2f}x")
    print(f"frames lost by best-effort QoS and retried: {r['lost_frames_retried']}")
    write_json(args.json, out)


if __name__ == "__main__":
    main()
