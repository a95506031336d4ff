"""`ember-bag make`: images + ground truth into rosbag2 (both storages), read back exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from ember.bag.errors import BagError
from ember.bag.frames import camera_stream, iter_frames, read_ground_truth
from ember.bag.ground_truth import GroundTruth
from ember.bag.io import open_bag, storage_of
from ember.bag.make import make_bag
from tests.bag.helpers import LABELS, cli, read_rgb, write_labelled_images


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "jpeg"])
def test_made_bag_reads_back_frames_and_ground_truth(tmp_path, storage, compressed):
    labels = write_labelled_images(tmp_path / "imgs", n=5)
    result = make_bag(tmp_path / "bag", [tmp_path / "imgs"], [labels], storage=storage, compressed=compressed,
                      rate_hz=4.0, start_ns=10**18, task="Help.")
    assert result.frames == 5 and result.duration_s == pytest.approx(1.0)
    assert storage_of(tmp_path / "bag") == storage
    meta = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage and meta["message_count"] == 10
    with open_bag(tmp_path / "bag") as bag:
        conn = camera_stream(bag)
        assert conn.msgtype == ("sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image")
        truth = read_ground_truth(bag)
        frames = list(iter_frames(bag, conn, truth))
    assert [f.stamp_ns for f in frames] == [10**18 + k * 250_000_000 for k in range(5)]
    assert [f.bag_time_ns for f in frames] == [f.stamp_ns for f in frames]
    for k, frame in enumerate(frames):
        source = read_rgb(tmp_path / "imgs" / f"img_{k:02d}.png")
        if compressed:  # jpeg: close, not equal
            assert frame.rgb.shape == source.shape
            assert np.abs(frame.rgb.astype(int) - source).mean() < 6
        else:
            np.testing.assert_array_equal(frame.rgb, source)
        gt = frame.truth
        assert gt.source == f"img_{k:02d}.png" and gt.stamp_ns == frame.stamp_ns
        assert gt.incidents == LABELS[k % len(LABELS)][0] and gt.negatives == ["fog"]
        assert gt.robot_types == sorted(LABELS[k % len(LABELS)][1], key=["drone", "humanoid", "wheeled", "legged", "underwater"].index)
        assert gt.places == ["street"] and gt.task == "Help." and gt.image_topic == conn.topic


def test_large_images_are_downscaled_and_unlabelled_folders_work(tmp_path):
    folder = tmp_path / "imgs"
    write_labelled_images(folder, n=2, size=(300, 500))
    make_bag(tmp_path / "bag", [folder], [], max_side=100)  # no labels file: every image, no truth content
    with open_bag(tmp_path / "bag") as bag:
        frames = list(iter_frames(bag, camera_stream(bag), read_ground_truth(bag)))
    assert [f.rgb.shape for f in frames] == [(60, 100, 3)] * 2
    assert all(f.truth.incidents == [] and f.truth.robot_types is None for f in frames)


def test_ground_truth_message_round_trips_and_rejects_other_json():
    gt = GroundTruth(stamp_ns=5 * 10**9 + 7, source="a.jpg", incidents=["flooded"], robot_types=["drone"], task="t")
    back = GroundTruth.from_json(gt.to_json())
    assert back == gt
    assert json.loads(gt.to_json())["stamp"] == {"sec": 5, "nanosec": 7}
    with pytest.raises(BagError, match="schema"):
        GroundTruth.from_json('{"stamp": 1}')
    with pytest.raises(BagError, match="not JSON"):
        GroundTruth.from_json("on fire")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"incidents": {"alien invasion": 1}}, "unknown incident label 'alien invasion'"),
        ({"incidents": {"on fire": 2}}, "has value 2; expected 1 or 0"),
        ({"places": ["moon"]}, "unknown place label 'moon'"),
        ({"robots": "Drone, Jetpack"}, "unknown robot type 'Jetpack'"),
        ({"robots": 3}, "robots must be a list"),
        ("not an object", "is not an object"),
    ],
)
def test_bad_labels_rows_are_named(tmp_path, row, message):
    folder = tmp_path / "imgs"
    labels = write_labelled_images(folder, n=1)
    data = json.loads(labels.read_text())
    data["img_00.png"] = row
    labels.write_text(json.dumps(data))
    with pytest.raises(BagError, match="img_00.png") as err:
        make_bag(tmp_path / "bag", [folder], [labels])
    assert message in str(err.value)
    assert not (tmp_path / "bag").exists(), "a failed make must not leave a bag behind"


def test_make_cli_reports_errors_and_skips_missing_images(tmp_path):
    folder = tmp_path / "imgs"
    labels = write_labelled_images(folder, n=2)
    data = json.loads(labels.read_text())
    data["gone.png"] = {"incidents": ["flooded"]}
    labels.write_text(json.dumps(data))
    ok = cli("bag", "make", "--images", folder, "--labels", labels, "--out", tmp_path / "bag", "--storage", "sqlite3")
    assert ok.returncode == 0, ok.stderr
    assert "2 frames" in ok.stdout and "skipped" in ok.stderr and "gone.png" in ok.stderr
    info = cli("bag", "info", tmp_path / "bag")
    assert "/camera/image_raw  sensor_msgs/msg/Image  2 msgs" in info.stdout
    assert "/ember/ground_truth  std_msgs/msg/String  2 msgs" in info.stdout

    again = cli("bag", "make", "--images", folder, "--labels", labels, "--out", tmp_path / "bag")
    assert again.returncode == 2 and "exists already" in again.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = cli("bag", "make", "--images", empty, "--out", tmp_path / "bag2")
    assert none.returncode == 2 and "no image to put in the bag" in none.stderr
    no_labels = cli("bag", "make", "--images", folder, "--labels", tmp_path / "nope.json", "--out", tmp_path / "bag3")
    assert no_labels.returncode == 2 and "labels file" in no_labels.stderr and "does not exist" in no_labels.stderr
