"""What every loader returns: Samples, and a LoadReport of the rows it skipped and why."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ember.fsutil import decode_text

log = logging.getLogger("ember_training.data")

CAPTION_TASK = "Describe the image."
"""The task of captioning samples (stage 1); other sources carry their own question or task."""

# skip reasons (the summary line counts each)
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"  # empty, or not an image format (a failed download)
UNKNOWN_LABEL = "unknown label"
MALFORMED = "malformed row"
NO_ANSWER = "no answer"
DUPLICATE = "duplicate row"  # an exact copy of an earlier row (a doubled line): it would weigh twice
EXAMPLES = 3
"""different culprits a summary line names per skip reason"""


@dataclass
class Sample:
    """One training example before tokenisation.

    `image` is a file path, or None for text-only rows (robot selection): those are paired with
    a labelled incident scene at load time (see ember_training.data.dataset). Label vectors are
    int8 with 1 = positive, 0 = explicit negative, -1 = unknown (masked out of the loss), in the
    orders of ember.labels.
    """

    uid: str
    source: str
    image: str | None
    task: str
    target: str = ""  # LM target text (already formatted, ends with EOS) or "" for heads only
    incidents: np.ndarray | None = None  # int8 [43]
    places: np.ndarray | None = None  # int8 [49]
    robots: np.ndarray | None = None  # int8 [5]
    robot_set: tuple[int, ...] = ()  # robot-selection rows: the answer set (sorted indices)
    steps: tuple[tuple[int, str, int], ...] = ()  # (order, description, robot index) plan steps
    capabilities: dict[int, list[str]] = field(default_factory=dict)  # robot -> phrases (CoT)

    @property
    def split_key(self) -> str:
        """What decides train/held-out: the image file name (all its captions and turns go together,
        wherever the data directory is), or for text-only rows the task's letters (the single and
        multi files share tasks)."""
        if self.image is not None:
            return "image:" + Path(self.image).name
        return "task:" + re.sub(r"[^a-z]", "", self.task.lower())


@dataclass
class LoadReport:
    """Rows read, samples kept and skipped rows by reason; `summary()` is the one log line."""

    name: str
    rows: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, dict[str, str]] = field(default_factory=dict)  # reason -> {key: culprit}, first 3 keys
    _more: set[str] = field(default_factory=set, repr=False)  # reasons with more distinct culprits than shown
    _seen: set[int] = field(default_factory=set, repr=False)  # 64-bit digests of the rows read

    def duplicate(self, row: Any, example: object = None) -> bool:
        """True (and the row counted as DUPLICATE) if `row` (its parsed JSON value or CSV fields) is
        exactly an earlier row of this file; the first copy is kept."""
        text = json.dumps(row, sort_keys=True, ensure_ascii=False, default=repr)
        key = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        if key in self._seen:
            self.skip(DUPLICATE, example)
            return True
        self._seen.add(key)
        return False

    def skip(self, reason: str, example: object = None, key: str | None = None) -> None:
        """Count a skipped row; `example` (a path, 'row 3: Robotic Arm') is shown for the first
        EXAMPLES rows of the reason with different `key`s (default: the example itself; a robot
        name, so that a name repeated on many rows is shown once)."""
        self.skipped[reason] += 1
        if example is None:
            return
        shown = self.examples.setdefault(reason, {})
        key = str(example) if key is None else key
        if key in shown:
            return
        if len(shown) < EXAMPLES:
            shown[key] = repr(str(example))
        else:
            self._more.add(reason)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        detail = "; ".join(f"{reason} {n}" + (f" e.g. {self._shown(reason)}" if self.examples.get(reason) else "")
                           for reason, n in sorted(self.skipped.items()))
        text = f"{self.name}: {self.kept} samples from {self.rows} rows, skipped {self.n_skipped}"
        return text + (f" ({detail})" if detail else "")

    def _shown(self, reason: str) -> str:
        return ", ".join([*self.examples[reason].values(), *(["..."] if reason in self._more else [])])

    def emit(self) -> LoadReport:
        log.info(self.summary())
        return self


class DataError(RuntimeError):
    """A dataset file that cannot be read at all (missing, not JSON, wrong top-level shape)."""


def read_text(path: Path, name: str) -> str:
    """A UTF-8 text file, also as Windows tools write it: with a BOM (Notepad, Excel) or in UTF-16
    with a BOM (PowerShell 5's `>`); DataError naming the dataset and the file otherwise."""
    if not path.is_file():
        raise DataError(f"{name}: file not found: {path}")
    try:
        return decode_text(path.read_bytes())
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: {path} is not UTF-8 text: {e}") from None


class KeyedRows(dict):
    """A JSON object that also keeps its (key, value) pairs in file order, repeated keys included
    (json keeps only the last value of a key: a doubled line of a keyed annotation file vanishes)."""

    pairs: list[tuple[str, Any]]


def _keyed_rows(pairs: list[tuple[str, Any]]) -> KeyedRows:
    obj = KeyedRows(pairs)
    obj.pairs = pairs
    return obj


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a dataset loads: parsing and checking a million
    rows makes millions of container objects (none of them garbage), and the collector would walk all
    of them again and again (the JSON parse of 200k incident rows took 4.5x as long with it on)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_json(path: Path, name: str, keyed_rows: bool = False) -> Any:
    """Parse a JSON file (read_text's encodings) or raise DataError naming the dataset and the file.
    With `keyed_rows`, every object is a KeyedRows (its pairs in file order, repeated keys too)."""
    text = read_text(path, name)
    try:
        with gc_paused():
            return json.loads(text, object_pairs_hook=_keyed_rows if keyed_rows else None)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}: {path} is not valid JSON: {e}") from None


def image_path(images: Path, name: str) -> Path:
    """An annotation's image name under the images directory; Windows separators ('fire\\a.jpg', from
    files written on Windows) become '/'. An absolute name is used as it is."""
    return images / name.replace("\\", "/")


def label_vector(size: int) -> np.ndarray:
    """All-unknown label vector (-1 everywhere)."""
    return np.full(size, -1, dtype=np.int8)


def one_hot_set(indices: list[int] | tuple[int, ...], size: int) -> np.ndarray:
    """A complete multi-label vector: 1 at `indices`, 0 (explicit negative) elsewhere."""
    vec = np.zeros(size, dtype=np.int8)
    vec[list(indices)] = 1
    return vec


def clean_text(text: Any) -> str | None:
    """Whitespace-normalised non-empty string, else None."""
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    return text or None
