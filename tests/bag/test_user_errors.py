"""User errors of `ember-bag`: one clear line and status 2, never a traceback, a hang or a silently wrong bag."""

from __future__ import annotations

import pytest

from ember.bag.io import open_bag
from ember.bag.make import make_bag
from tests.bag.helpers import cli, string_bag, write_labelled_images


def _one_line_error(res, *words: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ember-bag: error: "), res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--rate", "nan", ["--rate"]),
        ("--rate", "inf", ["--rate"]),
        ("--rate", "1e10", ["--rate", "same timestamp"]),  # 0.1 ns apart: every frame one stamp
        ("--start", "-5", ["--start"]),
        ("--start", "1704067200000", ["--start"]),  # milliseconds given as seconds: past int32 seconds
        ("--max-side", "-3", ["--max-side"]),
    ],
)
def test_make_refuses_rates_starts_and_sizes_it_cannot_honour(tmp_path, option, value, words):
    labels = write_labelled_images(tmp_path / "imgs", n=3)
    out = tmp_path / "bag"
    res = cli("bag", "make", "--images", tmp_path / "imgs", "--labels", labels, "--out", out, f"{option}={value}")
    _one_line_error(res, *words)
    assert not out.exists(), "nothing half-written may be left behind"


def test_make_with_a_huge_rate_never_writes_frames_sharing_a_stamp(tmp_path):
    labels = write_labelled_images(tmp_path / "imgs", n=3)
    make_bag(tmp_path / "ok", [tmp_path / "imgs"], [labels], rate_hz=1e9)  # 1 ns apart is still distinct
    with open_bag(tmp_path / "ok") as bag:
        stamps = [t for _c, t, _raw in bag.messages(bag.connections_on("/camera/image_raw"))]
    assert len(set(stamps)) == 3


def test_make_into_a_path_below_a_file_is_a_clear_error(tmp_path):
    labels = write_labelled_images(tmp_path / "imgs", n=2)
    (tmp_path / "afile").write_text("not a directory")
    res = cli("bag", "make", "--images", tmp_path / "imgs", "--labels", labels, "--out", tmp_path / "afile" / "bag")
    _one_line_error(res, "cannot create bag", str(tmp_path / "afile" / "bag"))


@pytest.mark.ros
@pytest.mark.timeout(120)
@pytest.mark.parametrize("rate", ["nan", "-inf"])
def test_replay_refuses_a_rate_that_is_not_a_positive_number(tmp_path, rate):
    string_bag(tmp_path / "bag", "mcap", [0.0, 0.1, 0.2])
    # a NaN rate used to pass the `rate <= 0` check and spin forever in the timing loop
    res = cli("bag", "replay", tmp_path / "bag", f"--rate={rate}", timeout=60)
    _one_line_error(res, "--rate")
