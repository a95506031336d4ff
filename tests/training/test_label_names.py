"""One rule for incident/place label names (ember.labels.normalize_label), used by training's
Incidents1M loader and by the bag ground truth (`ember-bag make` labels files, /ember/ground_truth)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ember.bag.errors import BagError
from ember.bag.frames import read_ground_truth
from ember.bag.ground_truth import GroundTruth, read_labels
from ember.bag.io import create_writer, open_bag, reliable_qos
from ember.labels import incident_index, normalize_label, place_index
from ember_training.data.common import UNKNOWN_LABEL
from ember_training.data.incidents import load_incidents
from tests.bag.helpers import KILTED, START_NS

SPELLINGS = [("On_Fire", True), ("  on   FIRE ", True), ("on fire", True), ("on-fire", False), ("on fyre", False)]


def test_normalize_label_is_case_space_and_underscore_blind() -> None:
    assert normalize_label("  On_Fire ") == "on fire"
    assert normalize_label("Forest__Road") == "forest road"
    assert incident_index("Snow_Covered") == incident_index("snow covered")
    assert place_index("FOREST ROAD") == place_index("forest road")
    with pytest.raises(ValueError, match="unknown incident category 'on fyre'"):
        incident_index("on fyre")


def _image(folder: Path, name: str = "a.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / name), np.full((16, 16, 3), 90, np.uint8))
    return folder / name


@pytest.mark.parametrize(("name", "known"), SPELLINGS)
def test_training_and_bag_labels_files_accept_the_same_names(tmp_path: Path, name: str, known: bool) -> None:
    """The same labels row is accepted by both or refused by both (the bag side used to require the
    exact name, so a training annotation file with 'On_Fire' could not become a bag)."""
    _image(tmp_path / "imgs")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"a.png": {"incidents": {name: 1, "Flooded": 0}, "places": {"Forest_Road": 1}}}))
    samples, report = load_incidents(labels, tmp_path / "imgs")
    assert (len(samples) == 1) is known and (report.skipped[UNKNOWN_LABEL] == 0) is known
    if not known:
        with pytest.raises(BagError, match=f"unknown incident label {name!r}"):
            read_labels(tmp_path / "imgs", labels)
        return
    rows, missing = read_labels(tmp_path / "imgs", labels)
    assert missing == [] and len(rows) == 1
    # the bag carries the canonical names: metrics index them as they are
    assert (rows[0].incidents, rows[0].negatives, rows[0].places) == (["on fire"], ["flooded"], ["forest road"])
    assert samples[0].incidents[incident_index("on fire")] == 1 and samples[0].places[place_index("forest road")] == 1


def test_ground_truth_in_a_bag_takes_the_same_spellings(tmp_path: Path) -> None:
    """A bag written by another tool with 'On_Fire' in /ember/ground_truth reads as 'on fire' (it used to
    be refused as an unknown label); an unknown name is still refused."""
    def bag(path: Path, incidents: list[str]) -> Path:
        writer = create_writer(path, "mcap")
        conn = writer.add_connection("/ember/ground_truth", "std_msgs/msg/String", typestore=KILTED,
                                     offered_qos_profiles=[reliable_qos()])
        truth = GroundTruth(stamp_ns=START_NS, source="x.png", incidents=incidents, negatives=["Heavy_Rainfall"],
                            places=["Forest_Road"])
        msg = KILTED.types["std_msgs/msg/String"](data=truth.to_json())
        writer.write(conn, START_NS, KILTED.serialize_cdr(msg, "std_msgs/msg/String"))
        writer.close()
        return path

    with open_bag(bag(tmp_path / "ok", ["On_Fire"])) as opened:
        truth = read_ground_truth(opened)[START_NS]
    assert (truth.incidents, truth.negatives, truth.places) == (["on fire"], ["heavy rainfall"], ["forest road"])
    with open_bag(bag(tmp_path / "bad", ["on fyre"])) as opened, pytest.raises(BagError, match="'on fyre'"):
        read_ground_truth(opened)
