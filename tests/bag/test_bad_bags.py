"""Bad bags give clear errors: truncated (both storages), unknown type, missing topic, wrong definition."""

from __future__ import annotations

import pytest

from ember.bag.errors import BagError
from ember.bag.frames import camera_stream
from ember.bag.io import create_writer, open_bag
from ember.bag.make import make_bag
from tests.bag.helpers import (
    KILTED,
    START_NS,
    cli,
    custom_type_bag,
    string_bag,
    truncate,
    write_labelled_images,
)


@pytest.fixture
def image_dir(tmp_path):
    labels = write_labelled_images(tmp_path / "imgs", n=6, size=(120, 160))
    return tmp_path / "imgs", labels


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_reported_as_such(tmp_path, image_dir, storage):
    folder, labels = image_dir
    bag = tmp_path / "bag"
    make_bag(bag, [folder], [labels], storage=storage)
    truncate(bag, 0.6)
    with pytest.raises(BagError, match="truncated or corrupt"):
        with open_bag(bag) as opened:
            list(opened.messages())
    info = cli("bag", "info", bag)
    assert info.returncode == 2
    assert info.stderr.startswith("ember-bag: error: bag") and "truncated or corrupt" in info.stderr


def test_missing_metadata_reads_the_storage_file_and_a_non_bag_is_refused(tmp_path, image_dir):
    folder, labels = image_dir
    bag = tmp_path / "bag"
    make_bag(bag, [folder], [labels], storage="mcap")
    (bag / "metadata.yaml").unlink()  # a recorder killed before it closed the bag
    with open_bag(bag) as opened:
        assert camera_stream(opened).msgcount == 6
    with pytest.raises(BagError, match="does not exist"):
        open_bag(tmp_path / "nowhere").__enter__()
    (tmp_path / "plain").mkdir()
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        open_bag(tmp_path / "plain").__enter__()


def test_missing_topics_are_named(tmp_path):
    string_bag(tmp_path / "chat", "mcap", [0.0, 0.1])
    with open_bag(tmp_path / "chat") as bag:
        with pytest.raises(BagError, match=r"no camera topic .*/chatter \(std_msgs/msg/String\)"):
            camera_stream(bag)
        with pytest.raises(BagError, match=r"no topic '/camera/image_raw' \(topics: /chatter\)"):
            camera_stream(bag, "/camera/image_raw")
        with pytest.raises(BagError, match="not a camera image type"):
            camera_stream(bag, "/chatter")
    replay = cli("bag", "replay", tmp_path / "chat", "--topics", "/nope")
    assert replay.returncode == 2 and "has no topic /nope (topics: /chatter)" in replay.stderr
    remap = cli("bag", "replay", tmp_path / "chat", "--remap", "/other:=/x")
    assert remap.returncode == 2 and "--remap names topics the bag lacks: /other" in remap.stderr
    bad = cli("bag", "replay", tmp_path / "chat", "--remap", "/chatter=/x")
    assert bad.returncode == 2 and "expected FROM:=TO" in bad.stderr


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_unknown_message_types_are_refused_with_the_reason(tmp_path, storage):
    custom_type_bag(tmp_path / "defined", storage, with_definition=True)
    custom_type_bag(tmp_path / "bare", storage, with_definition=False)
    defined = cli("bag", "replay", tmp_path / "defined")
    assert defined.returncode == 2
    assert "topic /widgets: acme_msgs/msg/Widget is defined in the bag but has no installed Python interface" in defined.stderr
    assert "pip install ros-acme-msgs" in defined.stderr and "--skip-unknown" in defined.stderr
    bare = cli("bag", "replay", tmp_path / "bare")
    assert bare.returncode == 2
    assert "acme_msgs/msg/Widget is an unknown message type: the bag holds no definition" in bare.stderr
    # the bag's own definition still deserialises the custom type
    with open_bag(tmp_path / "defined") as bag:
        conn = next(c for c in bag.connections if c.topic == "/widgets")
        msgs = [bag.deserialize(raw, conn.msgtype) for _, _, raw in bag.messages([conn])]
        assert [(m.teeth, m.name) for m in msgs] == [(0, "w"), (1, "w"), (2, "w")]
    with open_bag(tmp_path / "bare") as bag:
        assert bag.unknown_types == {"acme_msgs/msg/Widget"}


def test_a_definition_that_differs_from_the_installed_interface_is_refused(tmp_path):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg("int32 data", "std_msgs/msg/String"))  # not the real String
    writer = create_writer(tmp_path / "odd", "mcap")
    conn = writer.add_connection("/odd", "std_msgs/msg/String", typestore=store)
    writer.write(conn, START_NS, store.serialize_cdr(store.types["std_msgs/msg/String"](data=3), "std_msgs/msg/String"))
    writer.close()
    res = cli("bag", "replay", tmp_path / "odd")
    assert res.returncode == 2
    assert "the installed std_msgs/msg/String" in res.stderr and "differs from the one recorded" in res.stderr
    assert KILTED.hash_rihs01("std_msgs/msg/String") in res.stderr


def test_bags_without_definitions_fall_back_to_kilted_definitions(tmp_path):
    """Bags of rosbag2 before Iron hold no definitions: standard types still read."""
    writer = create_writer(tmp_path / "old", "sqlite3")
    conn = writer.add_connection("/chatter", "std_msgs/msg/String", msgdef="", rihs01="RIHS01_" + "0" * 64)
    writer.write(conn, START_NS, KILTED.serialize_cdr(KILTED.types["std_msgs/msg/String"](data="old"), "std_msgs/msg/String"))
    writer.close()
    with open_bag(tmp_path / "old") as bag:
        assert not bag.unknown_types
        (c, _, raw), = list(bag.messages())
        assert bag.deserialize(raw, c.msgtype).data == "old"
