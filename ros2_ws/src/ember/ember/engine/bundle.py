"""The model bundle (DESIGN §4): a directory with bundle.json, vision.onnx, decoder.onnx, tokenizer.json.

`BundleFiles` opens a bundle for loading: bundle.json is parsed and validated (the directory
and every file exist, format_version is one this engine reads, the metadata has every required
field) and every file it lists is opened at once, so each later read comes from the files of that
one export, whatever renames a new export into place meanwhile. A file's sha256 is checked on
what the loader gets: `loadable_path(name)` (onnxruntime: /proc/self/fd/N of the checked file,
then `check_unchanged` refuses a rewrite in place during the load), `read(name)` (the tokenizer;
onnxruntime where there is no /proc) or `open(name)` (the memory-mapped robot selector), never the
path in the bundle, so what was checked is what runs. `load_consistent` starts a load again when the
directory was replaced while it ran; `load_bundle` only validates. Any problem raises
BundleError with a message that names the bundle and what is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
BUNDLE_JSON = "bundle.json"
MODEL_FILES = ("vision.onnx", "decoder.onnx", "tokenizer.json")
REQUIRED_FIELDS = (
    "format_version",
    "model_version",
    "precision",
    "image_size",
    "mean",
    "std",
    "num_visual_tokens",
    "d_model",
    "n_layers",
    "n_heads",
    "head_dim",
    "n_positions",
    "vocab_size",
    "robot_types",
    "incident_labels",
    "place_labels",
    "prompt_template",
    "max_new_tokens",
    "special_token_ids",
    "robot_thresholds",
    "files",
)


#: Test seam: callables run with (bundle directory, file name) after that file was checked and right
#: before it is loaded ("bundle.json": parsed, no model file opened yet). tests/engine/test_bundle_swap.py
#: replaces the bundle there, as an ember-export finishing at that moment would.
BEFORE_LOAD: list[Callable[[Path, str], None]] = []
#: How often a load is started again when the bundle directory was replaced while it ran.
REPLACED_RETRIES = 2
_CHUNK = 1 << 20


def before_load(path: Path, name: str) -> None:
    """Run the BEFORE_LOAD hooks (none outside tests)."""
    for hook in BEFORE_LOAD:
        hook(path, name)


class BundleError(Exception):
    """A model bundle that is missing, incomplete, corrupt or of an unknown format."""


class BundleReplacedError(BundleError):
    """The bundle directory was replaced (a new export renamed in) while it was being loaded."""


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: its directory and parsed bundle.json."""

    path: Path
    meta: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name


def _sha256_constructor() -> Callable[[], Any]:
    """Python's built-in SHA-256: `hashlib` would load OpenSSL's libcrypto (~3.5 MB resident).
    Looked up once: a failed import probe per hashed file stat'ed the import path and left a few
    dozen bytes behind for good (a process reloading bundles for months)."""
    for name in ("_sha2", "_sha256"):  # 3.12+, 3.10-3.11
        try:
            return __import__(name).sha256
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256


_sha256 = _sha256_constructor()


def _stream_digest(fh: BinaryIO, chunk: int = _CHUNK) -> str:
    h = _sha256()
    while block := fh.read(chunk):
        h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    h = _sha256()
    h.update(data)
    return h.hexdigest()


def sha256_file(path: str | Path, chunk: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in chunks (no whole-file copy in memory)."""
    with open(path, "rb") as fh:
        return _stream_digest(fh, chunk)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    """What any write to a file changes: its size, modification and status-change times."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


class BundleFiles:
    """A bundle directory opened for loading (use as a context manager; `close` ends it).

    bundle.json is read and validated and every file it lists is opened right away, through the
    directory opened once: a new export renamed into place later (ember-export's last step) does
    not change what this object reads. `read` and `open` check a file's sha256 (unless
    verify_hashes is False) on the very bytes they hand out.
    """

    def __init__(self, bundle_dir: str | Path, verify_hashes: bool = True) -> None:
        self.path = path = Path(bundle_dir)
        self.verify_hashes = verify_hashes
        self._files: dict[str, BinaryIO] = {}
        self._signatures: dict[str, tuple[int, int, int]] = {}  # name -> (size, mtime, ctime) when opened
        self._dir_fd: int | None = None
        if not path.exists():
            raise BundleError(f"model bundle not found: {path} does not exist (build one with `make bundle` or ember-export)")
        if not path.is_dir():
            raise BundleError(f"model bundle {path} is not a directory")
        try:
            self._dir_fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise BundleError(f"model bundle {path}: cannot open the directory ({exc.strerror})") from exc
        self._identity = _identity(os.fstat(self._dir_fd))
        try:
            self.meta = self._read_meta()
            before_load(path, BUNDLE_JSON)
            self.expected = self._listed_hashes()
            for name in self.expected:
                self._files[name] = self._open(name)
        except BundleError as exc:
            self.close()
            if self.replaced():
                raise BundleReplacedError(f"model bundle {path} was replaced while loading ({exc})") from exc
            raise

    # -- opening ---------------------------------------------------------------------------------

    def _open(self, name: str, missing: str = "") -> BinaryIO:
        try:
            fd = os.open(name, os.O_RDONLY, dir_fd=self._dir_fd)
        except FileNotFoundError:
            raise BundleError(f"model bundle {self.path} is missing {missing or name}") from None
        except OSError as exc:
            raise BundleError(f"model bundle {self.path}: cannot open {name} ({exc.strerror})") from exc
        fh = os.fdopen(fd, "rb")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            fh.close()
            raise BundleError(f"model bundle {self.path} is missing {missing or name} (not a regular file)")
        self._signatures[name] = _signature(st)
        return fh

    def _read_meta(self) -> dict[str, Any]:
        path = self.path
        with self._open(BUNDLE_JSON) as fh:
            self.meta_bytes = raw = fh.read()
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"model bundle {path}: {BUNDLE_JSON} is not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise BundleError(f"model bundle {path}: {BUNDLE_JSON} is not a JSON object")
        version = meta.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise BundleError(
                f"model bundle {path}: unknown format_version {version!r}; this engine reads "
                f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))} (re-export it with a matching ember-export)"
            )
        missing_fields = [k for k in REQUIRED_FIELDS if k not in meta]
        if missing_fields:
            raise BundleError(f"model bundle {path}: {BUNDLE_JSON} lacks field(s) {', '.join(missing_fields)}")
        return meta

    def _listed_hashes(self) -> dict[str, str]:
        """name -> expected sha256 of every file bundle.json lists."""
        path, files = self.path, self.meta["files"]
        if not isinstance(files, dict):
            raise BundleError(f"model bundle {path}: `files` in {BUNDLE_JSON} must map file names to hashes")
        for name in MODEL_FILES:
            if name not in files:
                raise BundleError(f"model bundle {path}: {BUNDLE_JSON} does not list {name}")
        out: dict[str, str] = {}
        for name, entry in files.items():
            if Path(name).name != name or name in ("", ".", ".."):
                raise BundleError(f"model bundle {path}: file name {name!r} must not contain a path")
            expected = entry.get("sha256") if isinstance(entry, dict) else entry
            if not isinstance(expected, str) or len(expected) != 64:
                raise BundleError(f"model bundle {path}: no valid sha256 for {name} in {BUNDLE_JSON}")
            out[name] = expected
        return out

    # -- reading ---------------------------------------------------------------------------------

    def _check(self, name: str, actual: str) -> None:
        expected = self.expected[name]
        if actual != expected:
            raise BundleError(
                f"model bundle {self.path}: sha256 mismatch for {name} (expected {expected[:12]}..., "
                f"found {actual[:12]}...): the file is corrupt or was changed after export"
            )

    def _pinned(self, name: str) -> BinaryIO:
        if name not in self._files:
            raise BundleError(f"model bundle {self.path}: {BUNDLE_JSON} does not list {name}")
        fh = self._files[name]
        fh.seek(0)
        return fh

    def read(self, name: str) -> bytes:
        """The whole content of `name`, read once and checked: load these bytes, not the path."""
        data = self._pinned(name).read()
        if self.verify_hashes:
            self._check(name, sha256_bytes(data))
        before_load(self.path, name)
        return data

    def open(self, name: str) -> BinaryIO:
        """`name`'s open file (the one of this export), checked by streaming it, rewound: for a
        loader that memory-maps (the robot selector). Valid until `close`."""
        fh = self._pinned(name)
        if self.verify_hashes:
            self._check(name, _stream_digest(fh))
            fh.seek(0)
        before_load(self.path, name)
        return fh

    def loadable_path(self, name: str) -> str | None:
        """A path that opens `name`'s checked file itself (`/proc/self/fd/N` of the file opened with the
        bundle, whatever was renamed over its name since), for a loader that reads a path without a
        copy of the bytes in this process; None where the system has no such path (then `read`).
        Call `check_unchanged(name)` once the loader is done: it catches a rewrite in place."""
        fh = self.open(name)
        path = f"/proc/self/fd/{fh.fileno()}"
        return path if os.path.exists(path) else None

    def check_unchanged(self, name: str) -> None:
        """BundleError when `name` was written to since it was opened (`cp` over it in place: its
        content is no longer what was checked)."""
        st = os.fstat(self._pinned(name).fileno())
        size, mtime, ctime = self._signatures[name]
        # removing the file (the old bundle deleted after a swap) changes its ctime only: not a write
        if (st.st_size, st.st_mtime_ns) != (size, mtime) or (st.st_ctime_ns != ctime and st.st_nlink > 0):
            raise BundleError(
                f"model bundle {self.path}: {name} was rewritten in place while it was loaded (its content is "
                f"no longer the one checked against {BUNDLE_JSON}): export bundles with ember-export, which "
                f"replaces the whole directory, not by copying files over a bundle in use"
            )

    def verify_all(self) -> None:
        """Check every listed file's sha256 (streamed: nothing is kept in memory)."""
        if self.verify_hashes:
            for name in self.expected:
                self._check(name, _stream_digest(self._pinned(name)))

    def bundle(self) -> Bundle:
        return Bundle(path=self.path, meta=self.meta)

    def replaced(self) -> bool:
        """Whether the path now names another directory than the one opened (or none)."""
        try:
            return _identity(os.stat(self.path)) != self._identity
        except OSError:
            return True

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __enter__(self) -> BundleFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_consistent(bundle_dir: str | Path, load: Callable[[BundleFiles], T], verify_hashes: bool = True) -> T:
    """`load(files)` on the opened bundle. When it fails because the directory was replaced while
    it ran (ember-export renaming a new bundle in), it starts again on the new one, so the result
    comes from one whole export: the old one (when the swap came after everything was read) or
    the new one."""
    path = Path(bundle_dir)
    for attempt in range(REPLACED_RETRIES + 1):
        try:
            with BundleFiles(path, verify_hashes) as files:
                try:
                    return load(files)
                except BundleError as exc:
                    if not files.replaced():
                        raise
                    raise BundleReplacedError(f"model bundle {path} was replaced while loading ({exc})") from exc
        except BundleReplacedError:
            if attempt == REPLACED_RETRIES:
                raise
            log.info("model bundle %s was replaced while loading: loading the new one", path)
    raise AssertionError("unreachable")


def load_bundle(bundle_dir: str | Path, verify_hashes: bool = True) -> Bundle:
    """Read and validate a bundle directory (every file's sha256 streamed); BundleError on any problem.

    For validation only: a loader should take the bytes from `BundleFiles.read` (see module doc)."""

    def validate(files: BundleFiles) -> Bundle:
        files.verify_all()
        return files.bundle()

    return load_consistent(bundle_dir, validate, verify_hashes)
