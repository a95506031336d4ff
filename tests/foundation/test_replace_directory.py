"""`ember.fsutil.replace_directory`, the last step of ember-export and ember-deploy package: the new
directory takes the old one's place in one step, and nothing of the old one is left behind."""

from __future__ import annotations

import os
from pathlib import Path

from ember import fsutil


def _tree(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_the_new_directory_swaps_in_atomically_and_the_old_one_is_removed(tmp_path):
    dst = _tree(tmp_path / "bundle", {"bundle.json": "old", "stale.onnx": "old"})
    held = os.open(dst, os.O_RDONLY)  # an engine that opened the old bundle keeps reading it
    try:
        staged = _tree(tmp_path / ".bundle.staging", {"bundle.json": "new"})
        fsutil.replace_directory(staged, dst)
        assert (dst / "bundle.json").read_text() == "new" and not (dst / "stale.onnx").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging, no .old left
        assert not os.path.exists(f"/proc/self/fd/{held}/bundle.json")  # the old tree is deleted
    finally:
        os.close(held)


def test_exchange_swaps_two_directories_in_one_step(tmp_path):
    a = _tree(tmp_path / "a", {"x": "a"})
    b = _tree(tmp_path / "b", {"x": "b"})
    ino_a, ino_b = a.stat().st_ino, b.stat().st_ino
    assert fsutil._exchange(a, b)  # Linux with glibc >= 2.28 (this machine, CI, robots)
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
    assert (a.stat().st_ino, b.stat().st_ino) == (ino_b, ino_a)


def test_without_exchange_the_fallback_still_replaces_the_directory(tmp_path, monkeypatch):
    dst = _tree(tmp_path / "pkg", {"f": "old"})
    staged = _tree(tmp_path / ".pkg.staging", {"f": "new"})
    monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)  # another OS / filesystem
    fsutil.replace_directory(staged, dst)
    assert (dst / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_a_first_export_just_renames(tmp_path):
    staged = _tree(tmp_path / ".new.staging", {"f": "x"})
    fsutil.replace_directory(staged, tmp_path / "new")
    assert (tmp_path / "new" / "f").read_text() == "x" and not staged.exists()
