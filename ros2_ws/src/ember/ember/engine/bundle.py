"""The model bundle (DESIGN §4): a directory with bundle.json, vision.onnx, decoder.onnx, tokenizer.json.

`load_bundle` validates it before anything is loaded into onnxruntime: the directory and
every file exist, format_version is one this engine reads, the metadata has every
required field and each file's sha256 matches bundle.json. Any problem raises
BundleError with a message that names the bundle and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class BundleError(Exception):
    """A model bundle that is missing, incomplete, corrupt or of an unknown format."""


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: its directory and parsed bundle.json."""

    path: Path
    meta: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name


def _sha256():
    """Python's built-in SHA-256: `hashlib` would load OpenSSL's libcrypto (~3.5 MB resident)."""
    for name in ("_sha2", "_sha256"):  # 3.12+, 3.10-3.11
        try:
            return __import__(name).sha256()
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (no whole-file copy in memory)."""
    h = _sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_bundle(bundle_dir: str | Path, verify_hashes: bool = True) -> Bundle:
    """Read and validate a bundle directory; BundleError on any problem."""
    path = Path(bundle_dir)
    if not path.exists():
        raise BundleError(f"model bundle not found: {path} does not exist (build one with `make bundle` or ember-export)")
    if not path.is_dir():
        raise BundleError(f"model bundle {path} is not a directory")
    meta_path = path / BUNDLE_JSON
    if not meta_path.is_file():
        raise BundleError(f"model bundle {path} is missing {BUNDLE_JSON}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    files = meta["files"]
    if not isinstance(files, dict):
        raise BundleError(f"model bundle {path}: `files` in {BUNDLE_JSON} must map file names to hashes")
    for name in MODEL_FILES:
        if name not in files:
            raise BundleError(f"model bundle {path}: {BUNDLE_JSON} does not list {name}")
    for name, entry in files.items():
        fpath = path / name
        if Path(name).name != name:
            raise BundleError(f"model bundle {path}: file name {name!r} must not contain a path")
        if not fpath.is_file():
            raise BundleError(f"model bundle {path} is missing {name}")
        expected = entry.get("sha256") if isinstance(entry, dict) else entry
        if not isinstance(expected, str) or len(expected) != 64:
            raise BundleError(f"model bundle {path}: no valid sha256 for {name} in {BUNDLE_JSON}")
        if verify_hashes:
            actual = sha256_file(fpath)
            if actual != expected:
                raise BundleError(
                    f"model bundle {path}: sha256 mismatch for {name} (expected {expected[:12]}..., "
                    f"found {actual[:12]}...): the file is corrupt or was changed after export"
                )
    return Bundle(path=path, meta=meta)
