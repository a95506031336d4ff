"""Build the demo bag: the 12 shared incident photos plus generated scenes, with ground truth.

    python -m tests.eval.demo_bag --out build/demo_bag [--scenes 24] [--storage mcap] [--raw]

Photos are labelled in tests/eval/data/incident_photos.json (incident and place labels from
the file names and a look at each photo; expected robots are our judgement). Generated scenes
come from `ember-data synth` (ember_training.data.synth, Incidents1M format); their expected
robots follow ROBOTS_FOR below. Camera frames are jpeg (CompressedImage) unless --raw: raw
640x480 rgb8 frames are ~0.9 MB and a best-effort camera subscription loses many of them on
a loaded host (a live evaluation counts those as dropped).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from ember.bag.make import make_bag
from tests.conftest import SHARED_DATA

PHOTO_LABELS = Path(__file__).parent / "data" / "incident_photos.json"
ROBOTS_FOR = {  # first positive incident of a generated scene -> expected robot types
    "on fire": "Drone, Humanoid", "wildfire": "Drone", "with smoke": "Drone", "flooded": "Drone, Underwater Robot",
    "collapsed": "Drone, Robot with Legs", "earthquake": "Drone, Robot with Legs", "car accident": "Drone, Humanoid",
    "traffic jam": "Drone, Robot with Wheels", "snow covered": "Robot with Legs", "ship boat accident":
    "Underwater Robot, Drone", "oil spill": "Drone, Underwater Robot", "landslide": "Drone, Robot with Legs",
}


def scene_labels(annotations: Path) -> dict:
    """The synth annotation file with `robots` added (scenes without incident: Drone, to survey)."""
    rows = json.loads(annotations.read_text())
    for row in rows.values():
        positives = [name for name, flag in row["incidents"].items() if flag == 1]
        row["robots"] = ROBOTS_FOR.get(positives[0], "Drone") if positives else "Drone"
    return rows


def build(out: Path, scenes: int = 24, storage: str = "mcap", compressed: bool = True, seed: int = 7):
    """Write the demo bag to `out` (which must not exist); returns ember.bag.make.MakeResult."""
    from ember_training.config import SynthConfig
    from ember_training.data.synth import synth_incidents

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synth_incidents(root, SynthConfig(seed=seed, scenes=scenes, image_size=256), np.random.default_rng(seed), 0)
        labels = root / "scene_labels.json"
        labels.write_text(json.dumps(scene_labels(root / "incidents" / "multi_label_train.json")))
        return make_bag(out, [SHARED_DATA / "incidents" / "images", root / "incidents" / "images"],
                        [PHOTO_LABELS, labels], storage=storage, compressed=compressed, rate_hz=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--raw", action="store_true", help="sensor_msgs/Image instead of jpeg CompressedImage")
    args = parser.parse_args()
    result = build(Path(args.out), args.scenes, args.storage, not args.raw)
    print(f"wrote {result.path}: {result.frames} frames on {result.image_topic}")


if __name__ == "__main__":
    main()
