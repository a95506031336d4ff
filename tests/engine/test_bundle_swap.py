"""An engine starting while ember-export replaces its bundle runs what it checked, never a mix.

The exporter's last step is `ember.fsutil.replace_directory` (the new bundle renamed in, the old
one renamed aside and deleted); `cp` over a file rewrites it in place. Both are done here from the
engine's BEFORE_LOAD seam: after a file's sha256 was checked, right before it is loaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ember.engine import EmberEngine
from ember.engine import bundle as bundle_mod
from ember.engine.bundle import BundleError
from ember.fsutil import replace_directory

TASK = "Search the collapsed house for survivors."


@pytest.fixture(scope="module")
def second_bundle(tmp_path_factory) -> Path:
    """Another real export (other weights, same shapes): what a re-export swaps in."""
    from ember_training.testing import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("second") / "bundle", seed=1)


def _outputs(engine: EmberEngine) -> tuple:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    a = engine.analyze(image, TASK, max_new_tokens=4)
    return a.robot_scores, a.incident_scores, a.text


@pytest.fixture(scope="module")
def reference(tiny_bundle, second_bundle) -> dict[str, tuple]:
    """What each whole bundle computes, by its bundle.json file hashes."""
    refs = {}
    for path in (tiny_bundle, second_bundle):
        files = json.loads((path / "bundle.json").read_text())["files"]
        refs[files["decoder.onnx"]["sha256"]] = _outputs(EmberEngine(path))
    assert len({str(v) for v in refs.values()}) == 2, "the two exports must compute different things"
    return refs


@pytest.fixture
def hook(monkeypatch):
    """Install one BEFORE_LOAD action for `name`, run once; returns the list of calls seen."""
    seen: list[str] = []

    def install(name: str, action) -> list[str]:
        def run(path: Path, loading: str) -> None:
            seen.append(loading)
            if loading == name and seen.count(name) == 1:
                action()

        monkeypatch.setattr(bundle_mod, "BEFORE_LOAD", [run])
        return seen

    return install


def _assert_whole(engine: EmberEngine, reference: dict[str, tuple]) -> str:
    """The engine runs exactly the model its bundle.json describes; returns that decoder hash."""
    digest = engine.meta["files"]["decoder.onnx"]["sha256"]
    assert _outputs(engine) == reference[digest]
    return digest


def test_bundle_replaced_after_check_runs_the_checked_model(tiny_bundle, second_bundle, reference, hook, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    staged = shutil.copytree(second_bundle, tmp_path / ".staged")
    seen = hook("decoder.onnx", lambda: replace_directory(staged, bundle))
    engine = EmberEngine(bundle)
    assert "decoder.onnx" in seen
    digest = _assert_whole(engine, reference)
    assert digest == json.loads((tiny_bundle / "bundle.json").read_text())["files"]["decoder.onnx"]["sha256"]


def test_file_rewritten_in_place_after_check_is_not_run(tiny_bundle, second_bundle, reference, hook, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")

    def cp_over() -> None:  # what `cp second/decoder.onnx bundle/` does: same inode, new bytes
        with open(bundle / "decoder.onnx", "r+b") as fh:
            fh.truncate(0)
            fh.write((second_bundle / "decoder.onnx").read_bytes())

    hook("decoder.onnx", cp_over)
    with pytest.raises(BundleError, match="decoder.onnx was rewritten in place while it was loaded"):
        EmberEngine(bundle)


def test_bundle_replaced_while_loading_loads_one_whole_bundle(tiny_bundle, second_bundle, reference, hook, tmp_path):
    """Replaced after bundle.json was read, before any model file: the new bundle, whole."""
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    staged = shutil.copytree(second_bundle, tmp_path / ".staged")
    hook("bundle.json", lambda: replace_directory(staged, bundle))
    engine = EmberEngine(bundle)
    digest = _assert_whole(engine, reference)
    assert digest == json.loads((second_bundle / "bundle.json").read_text())["files"]["decoder.onnx"]["sha256"]


def _with_selector(src: Path, dst: Path, seed: int) -> Path:
    """A copy of bundle `src` with a random text robot selector, listed and hashed in bundle.json."""
    from ember.engine.bundle import sha256_file
    from ember.engine.robot_selector import SELECTOR_FILE
    from ember_training.robot_selection.selector import save_selector

    rng = np.random.default_rng(seed)
    words = np.array(sorted({"fire", "flood", "search", "bridge", "survivors", "house", "water"}), dtype="S12")
    arrays = {
        "words": words,
        "vectors": rng.integers(-127, 128, (len(words), 16), dtype=np.int8),
        "scales": np.full(len(words), 0.01, np.float32),
        "weights": np.ones(len(words), np.float32),
        "head_w": rng.normal(size=(3, 16)).astype(np.float32),
        "head_b": rng.normal(size=3).astype(np.float32),
        "sets": np.array([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]], np.uint8),
    }
    shutil.copytree(src, dst)
    save_selector(arrays, dst / SELECTOR_FILE)
    meta = json.loads((dst / "bundle.json").read_text())
    meta["files"][SELECTOR_FILE] = {"sha256": sha256_file(dst / SELECTOR_FILE)}
    (dst / "bundle.json").write_text(json.dumps(meta))
    return dst


def test_selector_is_the_checked_one_after_a_swap(tiny_bundle, hook, tmp_path):
    bundle = _with_selector(tiny_bundle, tmp_path / "bundle", seed=0)
    staged = _with_selector(tiny_bundle, tmp_path / ".staged", seed=1)
    expected = EmberEngine(bundle).selector.select(TASK).scores
    assert not np.array_equal(expected, EmberEngine(staged).selector.select(TASK).scores)
    hook("decoder.onnx", lambda: replace_directory(staged, bundle))
    engine = EmberEngine(bundle)
    np.testing.assert_array_equal(engine.selector.select(TASK).scores, expected)
    assert isinstance(engine.selector.vectors, np.memmap)  # still mapped, not read into memory
