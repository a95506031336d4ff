"""A new bundle swapped in under a running engine (ember.engine.reload.BundleSlot), in one process
with real engines on tiny bundles: picked up by a cheap stat check, loaded and checked whole while
the old engine keeps serving, swapped between two analyses, the old engine released; a bad bundle
never replaces a working one and is not tried again until the directory changes."""

from __future__ import annotations

import gc
import os
import shutil
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ember.engine.reload import BundleSlot, load_checked_engine, release_engine_memory
from tests.fleet.rollout import corrupt_file, half_copied, reordered_robot_types, swap_in, with_version

V1 = "tiny-random-int8"
V2 = "tiny-random-int8-v2"
IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def v2_bundle(tiny_bundle, tmp_path_factory) -> Path:
    return with_version(tiny_bundle, tmp_path_factory.mktemp("v2") / "bundle", V2)


@pytest.fixture
def slot(tiny_bundle, tmp_path):
    live = tmp_path / "robot" / "bundle"
    shutil.copytree(tiny_bundle, live)
    slot = BundleSlot(live, load_checked_engine, release_engine_memory)
    slot.load_initial()
    assert slot.version == V1
    return slot


def _settle(slot: BundleSlot):
    """Two checks: the first sees the change, the second loads it (None if nothing was loaded)."""
    assert slot.check() is None, "a change must be seen unchanged at two checks before it is loaded"
    return slot.check()


def test_a_swapped_in_bundle_is_loaded_and_the_old_engine_released(slot, v2_bundle):
    assert slot.check() is None and slot.check() is None, "nothing changed: nothing to load"
    old = weakref.ref(slot.value)
    swap_in(v2_bundle, slot.path)
    outcome = _settle(slot)
    assert outcome is not None and outcome.ok, outcome
    assert (outcome.old_version, outcome.new_version) == (V1, V2) and f"{V1} -> {V2}" in outcome.message
    assert slot.version == V2 and slot.value.model_version == V2 and slot.error == ""
    gc.collect()
    assert old() is None, "the old engine must be released after the swap"
    with slot.using() as engine:
        assert engine.analyze(IMAGE, max_new_tokens=2).model_version == V2
    assert slot.check() is None, "a loaded bundle is not loaded again"


def _missing_dir(src: Path, dst: Path) -> None:
    shutil.rmtree(dst)


BAD = {
    "corrupt file": (lambda src, dst: corrupt_file(dst), "sha256 mismatch for decoder.onnx"),
    "half copied": (lambda src, dst: (shutil.rmtree(dst), half_copied(src, dst)), "missing decoder.onnx"),
    "robot types order": (lambda src, dst: (shutil.rmtree(dst), reordered_robot_types(src, dst)), "robot_types"),
    "no directory": (_missing_dir, "not found"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_bundle_keeps_the_old_engine_and_is_tried_again_only_once_it_changes(kind, slot, tiny_bundle, v2_bundle):
    make_bad, problem = BAD[kind]
    engine = slot.value
    make_bad(v2_bundle, slot.path)
    outcome = _settle(slot)
    assert outcome is not None and not outcome.ok and problem in outcome.message, outcome
    assert outcome.message.endswith(f"(still running {V1})")
    assert slot.value is engine and slot.version == V1 and problem in slot.error
    with slot.using() as serving:
        assert serving.analyze(IMAGE, max_new_tokens=2).model_version == V1
    assert all(slot.check() is None for _ in range(5)), "an unchanged bad bundle must not be tried every period"
    forced = slot.reload()
    assert not forced.ok and problem in forced.message and slot.value is engine
    if slot.path.exists():
        shutil.rmtree(slot.path)
    swap_in(v2_bundle, slot.path)
    outcome = _settle(slot)
    assert outcome is not None and outcome.ok and slot.version == V2 and slot.error == "", outcome


def test_analyses_running_during_reloads_each_use_one_whole_engine(slot, tiny_bundle, v2_bundle):
    done = threading.Event()
    count = [0]
    seen: list[str] = []
    errors: list[BaseException] = []
    cond = threading.Condition()

    def analyse() -> None:
        try:
            while not done.is_set():
                with slot.using() as engine:
                    version = engine.model_version
                    result = engine.analyze(IMAGE, max_new_tokens=3)
                    assert result.model_version == version and slot.value is engine
                with cond:
                    count[0] += 1
                    seen.append(version)
                    cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            with cond:
                cond.notify_all()

    worker = threading.Thread(target=analyse, daemon=True)
    worker.start()
    try:
        for version, bundle in [(V2, v2_bundle), (V1, tiny_bundle), (V2, v2_bundle)]:
            swap_in(bundle, slot.path)
            outcome = slot.reload()  # loads while the worker analyses with the old engine
            assert outcome.ok and outcome.new_version == version, outcome
            with cond:
                target = count[0] + 2  # the one in flight may still be the old engine's; the next is the new
                assert cond.wait_for(lambda t=target: count[0] >= t or errors, 60), "the worker stopped analysing"
                assert not errors and seen[-1] == version, (errors, seen[-4:])
    finally:
        done.set()
        worker.join(60)
    assert not errors, errors


def _held_files(root: Path) -> list[str]:
    """The files under `root` this process holds open or mapped (deleted ones marked so)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir used
            continue
    with open("/proc/self/maps") as fh:
        held += [line.split(None, 5)[5].strip() for line in fh if len(line.split(None, 5)) == 6]
    return sorted({h for h in held if h.startswith(str(root))})


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_many_reloads_leave_no_old_bundle_file_open_and_no_descriptor_or_thread_behind(selector_bundle, tmp_path):
    """A daily rollout for months: each swap deletes the old bundle (swap-bundle's atomic rename, then
    the old folder removed); the process must not keep any of its files open or mapped (the robot's
    SD card would never get the space back), nor grow its descriptors or threads per reload."""
    bundle, _, task = selector_bundle
    v2 = with_version(bundle, tmp_path / "v2", "text-selector-v2")
    live = shutil.copytree(bundle, tmp_path / "robot" / "bundle")
    slot = BundleSlot(live, lambda p: load_checked_engine(p, threads=2), release_engine_memory)
    slot.load_initial()
    reloader = ThreadPoolExecutor(1)  # the node's reload timer: a thread of its own, kept
    counts = []
    try:
        for day in range(8):
            swap_in(v2 if day % 2 == 0 else bundle, live)
            outcome = reloader.submit(slot.reload).result()
            assert outcome.ok, outcome
            with slot.using() as engine:
                assert engine.analyze(IMAGE, task=task, max_new_tokens=2).robot_source == "text-selector"
            del engine
            held = _held_files(tmp_path / "robot")
            assert all(not h.endswith("(deleted)") for h in held), f"reload {day + 1}: old bundle files held: {held}"
            assert all(h.startswith(f"{live}/") for h in held), held
            counts.append((len(os.listdir("/proc/self/fd")), threading.active_count(), len(os.listdir("/proc/self/task"))))
    finally:
        reloader.shutdown()
    assert len(set(counts[1:])) == 1, f"descriptors, Python threads and OS threads after each reload: {counts}"


def test_asking_for_a_reload_of_the_bundle_already_running_loads_nothing(tiny_bundle, tmp_path, v2_bundle):
    """`ember-task reload` after the periodic check already loaded the swap (or twice in a row): the answer
    says the model is unchanged, and no second engine is loaded beside the first (+20 MiB for nothing)."""
    live = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    loads = []

    def counting_load(path: Path):
        loads.append(path)
        return load_checked_engine(path)

    slot = BundleSlot(live, counting_load, release_engine_memory)
    slot.load_initial()
    engine = slot.value
    again = slot.reload()
    assert again.ok and not again.changed and len(loads) == 1 and slot.value is engine, again
    assert again.message == f"{V1} already running: the bundle has not changed since it was loaded ({live})"
    assert again.line("model") == f"model unchanged: {again.message}"
    swap_in(v2_bundle, live)
    changed = slot.reload()
    assert changed.ok and changed.changed and len(loads) == 2 and slot.version == V2
    assert changed.line("model") == f"model reloaded: {V1} -> {V2} ({live})"
