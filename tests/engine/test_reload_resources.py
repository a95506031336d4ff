"""What a model reload may leave behind in a long-running process (a robot that gets a new model every
day for months): nothing that grows with the number of reloads. Loading a bundle must not look a
module up per hashed file (each failed import probe left a few dozen bytes behind for good and
stat'ed the import path), nor build a new tokenizer from an unchanged tokenizer.json. Descriptors,
maps and threads over many reloads: tests/fleet/test_bundle_reload.py; memory: bench/bundle_reload.py."""

from __future__ import annotations

import json
import shutil
import sys
from importlib.abc import MetaPathFinder
from pathlib import Path

import numpy as np

from ember.engine import EmberEngine
from ember.engine.bundle import load_bundle, sha256_file


class _Recorder(MetaPathFinder):
    """Records every module name the import system is asked to find (finds nothing itself)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - the MetaPathFinder protocol
        self.names.append(fullname)
        return None


def test_hashing_bundle_files_imports_nothing_per_file(tiny_bundle):
    sha256_file(tiny_bundle / "bundle.json")  # whatever the first use needs, once
    recorder = _Recorder()
    sys.meta_path.insert(0, recorder)
    try:
        for _ in range(3):
            load_bundle(tiny_bundle)  # every listed file's sha256
            sha256_file(tiny_bundle / "decoder.onnx")
    finally:
        sys.meta_path.remove(recorder)
    assert recorder.names == [], f"a reload must not probe imports per hashed file: {sorted(set(recorder.names))}"


def _with_tokenizer_rewritten(src: Path, dst: Path) -> Path:
    """A copy of bundle `src` whose tokenizer.json has the same vocabulary written another way
    (a retrained model's new tokenizer file, as far as the engine can tell), bundle.json updated."""
    shutil.copytree(src, dst)
    (dst / "tokenizer.json").write_text(json.dumps(json.loads((src / "tokenizer.json").read_text()), indent=3))
    meta = json.loads((dst / "bundle.json").read_text())
    meta["files"]["tokenizer.json"] = sha256_file(dst / "tokenizer.json")
    (dst / "bundle.json").write_text(json.dumps(meta, indent=1))
    return dst


def test_a_reload_with_the_same_tokenizer_file_reuses_the_tokenizer(tiny_bundle, tmp_path):
    """tokenizers (0.23) keeps ~3.7 KiB for good per Tokenizer that encodes once: a new one per
    daily reload grew the process for months. The same tokenizer.json (by sha256) is loaded once."""
    image = np.zeros((48, 64, 3), np.uint8)
    first = EmberEngine(tiny_bundle)
    first.analyze(image, max_new_tokens=1)
    copy = shutil.copytree(tiny_bundle, tmp_path / "copy")  # a re-export: same tokenizer file
    second = EmberEngine(copy)
    assert second.tokenizer is first.tokenizer, "an unchanged tokenizer.json must not build a new Tokenizer"
    other = EmberEngine(_with_tokenizer_rewritten(tiny_bundle, tmp_path / "other"))
    assert other.tokenizer is not first.tokenizer, "another tokenizer.json gets a tokenizer of its own"
    for engine in (first, second, other):
        assert engine.analyze(image, max_new_tokens=2).text == first.analyze(image, max_new_tokens=2).text
