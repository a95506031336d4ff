"""Bags as `ros2 bag record` leaves them on robots: compressed, interrupted, with definitions it did not find."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from ember.bag.errors import BagError
from ember.bag.frames import camera_stream, iter_frames, read_ground_truth
from ember.bag.io import open_bag
from tests.bag.helpers import cli, custom_type_bag, labelled_image_bag


def _frames(path: Path) -> list:
    with open_bag(path) as bag:
        conn = camera_stream(bag)
        return list(iter_frames(bag, conn, read_ground_truth(bag, conn.topic)))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("mode", ["file", "message"])
def test_zstd_compressed_bags_are_read_and_listed(tmp_path, storage, mode):
    bag = tmp_path / "bag"
    labelled_image_bag(bag, storage, n=3, compression=mode)
    assert [f.truth is not None and f.rgb is not None for f in _frames(bag)] == [True] * 3
    info = cli("bag", "info", bag)  # file mode leaves only bag.mcap.zstd / bag.db3.zstd beside the metadata
    assert info.returncode == 0, info.stderr
    assert f"({storage}), 6 messages" in info.stdout and "/camera/image_raw  sensor_msgs/msg/Image  3 msgs" in info.stdout


def _crashed_wal_recording(src: Path, out: Path) -> None:
    """`src`'s sqlite3 file rewritten in WAL mode (rosbag2's resilient preset), copied as a killed
    recorder leaves it: the committed messages still in the -wal journal, no metadata.yaml."""
    out.mkdir()
    live = out.parent / "live.db3"
    con = sqlite3.connect(live)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("ATTACH ? AS src", (str(next(src.glob("*.db3"))),))
    for name, sql in con.execute("SELECT name, sql FROM src.sqlite_master WHERE type='table'").fetchall():
        con.execute(sql)
        con.execute(f"INSERT INTO main.{name} SELECT * FROM src.{name}")
    con.commit()
    shutil.copyfile(live, out / "rec_0.db3")
    shutil.copyfile(live.with_name("live.db3-wal"), out / "rec_0.db3-wal")
    con.close()


@pytest.mark.parametrize("with_metadata", [False, True])
def test_an_interrupted_sqlite3_recording_is_read_with_its_wal_journal(tmp_path, with_metadata):
    labelled_image_bag(tmp_path / "src", "sqlite3", n=4)
    bag = tmp_path / "rec"
    _crashed_wal_recording(tmp_path / "src", bag)
    assert (bag / "rec_0.db3-wal").stat().st_size > 0
    if with_metadata:
        meta = (tmp_path / "src" / "metadata.yaml").read_text().replace("src.db3", "rec_0.db3")
        (bag / "metadata.yaml").write_text(meta)
    # the messages lived only in the journal: they used to be silently missing (0 frames, or no topics)
    frames = _frames(bag)
    assert len(frames) == 4 and all(f.truth is not None and f.rgb is not None for f in frames)
    assert sorted(p.name for p in bag.iterdir()) == sorted(["rec_0.db3", "rec_0.db3-wal"] + ["metadata.yaml"] * with_metadata)


def _kill_mcap_recording(bag: Path, out: Path) -> None:
    """`bag`'s mcap cut inside its last chunk, as a recorder killed while writing leaves it (no
    data end, summary or footer; no metadata.yaml)."""
    data = next(bag.glob("*.mcap")).read_bytes()
    pos, chunks = 8, []
    while pos < len(data) - 8:
        op, length = data[pos], int.from_bytes(data[pos + 1:pos + 9], "little")
        if op == 0x06:
            chunks.append((pos, length))
        pos += 9 + length
    assert len(chunks) >= 3, "want several chunks"
    out.mkdir()
    last, length = chunks[-1]
    (out / "rec_0.mcap").write_bytes(data[:last + length // 2])


def test_an_interrupted_mcap_recording_is_read_up_to_its_last_complete_chunk(tmp_path, tiny_bundle):
    labelled_image_bag(tmp_path / "src", "mcap", n=12, size=(240, 320))  # ~5 frames per 1 MiB chunk
    bag = tmp_path / "rec"
    _kill_mcap_recording(tmp_path / "src", bag)
    frames = _frames(bag)
    full = _frames(tmp_path / "src")
    assert 0 < len(frames) < 12
    assert [f.stamp_ns for f in frames] == [f.stamp_ns for f in full[: len(frames)]]
    # a frame's ground truth may have been in the chunk the recorder did not finish
    assert [f.truth for f in frames[:-1]] == [f.truth for f in full[: len(frames) - 1]]
    info = cli("bag", "info", bag)
    assert info.returncode == 0, info.stderr
    assert "unfinished recording" in info.stdout
    res = cli("eval", "bag", "--bag", bag, "--bundle", tiny_bundle, "--out", tmp_path / "report")
    assert res.returncode == 0, res.stderr
    assert f"offline: {len(frames)}/{len(frames)} frames answered" in res.stdout
    assert "ember-eval: note: " in res.stderr and "unfinished recording" in res.stderr, res.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(report["bag_notes"]) == 1 and "unfinished recording" in report["bag_notes"][0], report["bag_notes"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_definitions_rosbag2_stored_as_unknown_count_as_absent(tmp_path, storage):
    """rosbag2 writes encoding `unknown` (empty definition) for a type whose definition it did not find."""
    bag = tmp_path / "bag"
    custom_type_bag(bag, storage)
    if storage == "mcap":
        f = next(bag.glob("*.mcap"))
        f.write_bytes(f.read_bytes().replace(b"ros2msg", b"unknown"))
    else:
        con = sqlite3.connect(next(bag.glob("*.db3")))
        con.execute("UPDATE message_definitions SET encoding = 'unknown', encoded_message_definition = '' "
                    "WHERE topic_type = 'acme_msgs/msg/Widget'")
        con.commit()
        con.close()
    with open_bag(bag) as opened:  # used to fail: "truncated or corrupt: KeyError: 'unknown'"
        assert opened.unknown_types == {"acme_msgs/msg/Widget"}
        chatter = opened.connections_on("/chatter")
        assert [opened.deserialize(raw, c.msgtype).data for c, _, raw in opened.messages(chatter)] == ["m0", "m1", "m2"]
    info = cli("bag", "info", bag)
    assert info.returncode == 0 and "/widgets  acme_msgs/msg/Widget  3 msgs  (no definition" in info.stdout, info.stderr


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_camera_topic_on_several_connections_is_read_whole_and_mixed_types_are_refused(tmp_path, storage,
                                                                                       tiny_bundle):
    """A topic recorded over several connections (merged bags, several recorders) was evaluated on
    its first connection only: half the frames vanished without a word. A topic that carries both
    Image and CompressedImage was evaluated on the first type only."""
    same = tmp_path / "same"
    pixels = labelled_image_bag(same, storage, n=6, second_connection="sensor_msgs/msg/Image")
    frames = _frames(same)
    assert [f.index for f in frames] == list(range(6))
    assert all(f.truth is not None and (f.rgb == p).all() for f, p in zip(frames, pixels, strict=True))
    with open_bag(same) as bag:
        assert camera_stream(bag, "/camera/image_raw").msgcount == 6

    mixed = tmp_path / "mixed"
    labelled_image_bag(mixed, storage, n=4, second_connection="sensor_msgs/msg/CompressedImage")
    with open_bag(mixed) as bag, pytest.raises(BagError, match=r"/camera/image_raw .* carries messages of several types "
                                                          r"\(sensor_msgs/msg/CompressedImage, sensor_msgs/msg/Image"):
        camera_stream(bag)
    run = cli("eval", "bag", "--bag", mixed, "--bundle", tiny_bundle, "--out", tmp_path / "report")
    assert run.returncode != 0 and "carries messages of several types" in run.stderr, run.stderr
