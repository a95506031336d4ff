"""The text robot selector reads a task's word vectors without mapping the table's pages in.

A page fault on the memory-mapped table maps the kernel's fault-around window (64 KiB) for each
128-byte row: about 1 MiB of the engine's peak RSS for one task. The rows are read with pread
instead; the table stays mapped (for its shape) but no page of it becomes resident, and the
selection is the one of the table held in memory.
"""

from __future__ import annotations

import numpy as np
import pytest

from ember.engine.robot_selector import RobotSelector

TASKS = ("search the collapsed house for survivors", "inspect the pipe under water", "fly over the fire zone")


@pytest.fixture
def selector_file(tmp_path):
    rng = np.random.default_rng(0)
    words = sorted({"search", "collapsed", "house", "survivors", "inspect", "pipe", "under", "water", "fly",
                    "over", "fire", "zone", *(f"word{i:05d}" for i in range(6000))})
    sets = np.zeros((6, 5), np.uint8)
    for i in range(6):
        sets[i, [i % 5, (i + 2) % 5][: 1 + i % 2]] = 1
    arrays = {
        "words": np.array([w.encode("ascii") for w in words]),
        "vectors": rng.integers(-127, 128, (len(words), 128), dtype=np.int8),
        "scales": rng.random(len(words), dtype=np.float32) * 0.01,
        "weights": rng.random(len(words), dtype=np.float32) + 0.1,
        "head_w": rng.standard_normal((6, 128), dtype=np.float32),
        "head_b": rng.standard_normal(6, dtype=np.float32),
        "sets": sets,
    }
    path = tmp_path / "robot_selector.npz"
    np.savez(path, **arrays)  # uncompressed, as bundles ship it
    return path, arrays


def _resident_kib(address: int) -> int:
    """Rss of the mapping of this process that holds `address` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "Rss:":
                return int(line.split()[1])
    raise AssertionError("no mapping holds the table")


def test_task_rows_are_read_without_mapping_the_table_in(selector_file):
    path, _ = selector_file
    sel = RobotSelector(path, 5)
    assert isinstance(sel.vectors, np.memmap)  # the table stays mapped, off the RSS budget
    for task in TASKS:
        assert sel.select(task) is not None
    assert _resident_kib(sel.vectors.ctypes.data) == 0


def test_selection_is_that_of_the_table_in_memory(selector_file):
    path, arrays = selector_file
    sel = RobotSelector(path, 5)
    with open(path, "rb") as fh:  # the same selector with every array read into memory
        in_memory = RobotSelector(fh, 5)
    in_memory.vectors = in_memory._vector_rows = np.array(arrays["vectors"])
    for task in TASKS:
        a, b = sel.select(task), in_memory.select(task)
        assert a.chosen == b.chosen and a.known_words == b.known_words
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(sel.embed(task), in_memory.embed(task))
