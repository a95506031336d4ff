"""The bundle's text robot selector (optional file `robot_selector.npz`; numpy only).

A static word encoder distilled offline from the all-MiniLM-L6-v2 sentence embeddings
(ember_training.robot_selection.selector): each known word has an int8 vector (per-row scale)
and a weight; the task is the weighted mean of its words' vectors, L2-normalised. A label-set
head (multinomial logistic regression over the robot sets seen in training) gives P(set); the
robot scores are its marginals P(robot in set) and the selected set is the one with the highest
expected Jaccard overlap under P(set).

Arrays of the file:
  words    bytes  [N]      sorted vocabulary (ASCII lower-case words)
  vectors  int8   [N, d]   word vectors, row r = vectors[r] * scales[r]
  scales   f32    [N]
  weights  f32    [N]      pooling weight of each word (> 0)
  head_w   f32    [S, d]   label-set logits = head_w @ z + head_b
  head_b   f32    [S]
  sets     uint8  [S, R]   membership of each label set (R robot types, bundle order)
optional (the plan-step robot head; a file without it selects robot sets only):
  step_w   f32    [K, R, d] robot logits of the k-th plan step = step_w[k] @ z + step_b[k]
  step_b   f32    [K, R]

The file is an uncompressed npz: `words` and `vectors` are memory-mapped (the tables stay off
the RSS budget), and a task's vector rows are read with pread from that file rather than through
the mapping: a page fault would map 64 KiB around each 128-byte row (the kernel's fault-around),
which made the rows of one task cost ~1 MiB of peak RSS. In a bundle both come from the very
file whose sha256 was checked (BundleFiles.open): a new export renamed into place later does not
change them.
"""

from __future__ import annotations

import contextlib
import os
import re
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ember.engine.bundle import BundleError, BundleFiles, load_consistent
from ember.prompting import DEFAULT_TASK, MAX_TASK_CHARS

SELECTOR_FILE = "robot_selector.npz"
SELECTOR_ARRAYS = ("words", "vectors", "scales", "weights", "head_w", "head_b", "sets")
STEP_HEAD_ARRAYS = ("step_w", "step_b")  # optional, both or neither
_WORD = re.compile(r"[a-z]+")


_MAPPED = ("words", "vectors")  # the big tables: memory-mapped, only the rows a task uses become resident


def _read_arrays(fh: BinaryIO) -> dict[str, np.ndarray]:
    """The selector's arrays from an open npz; the big tables memory-mapped straight from it (uncompressed)."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(fh) as zf:
        names = set(zf.namelist())
        missing = [k for k in SELECTOR_ARRAYS if f"{k}.npy" not in names]
        if missing:
            raise ValueError(f"lacks array(s) {', '.join(missing)}")
        step_head = [k for k in STEP_HEAD_ARRAYS if f"{k}.npy" in names]
        if step_head and len(step_head) != len(STEP_HEAD_ARRAYS):
            raise ValueError(f"has {step_head[0]} without {({*STEP_HEAD_ARRAYS} - {*step_head}).pop()} (the plan-step head needs both)")
        for key in SELECTOR_ARRAYS + tuple(step_head):
            info = zf.getinfo(f"{key}.npy")
            if key in _MAPPED and info.compress_type == zipfile.ZIP_STORED:
                arrays[key] = _map_member(fh, info)
            else:
                with zf.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _map_member(fh: BinaryIO, info: zipfile.ZipInfo) -> np.ndarray:
    """np.memmap of a stored .npy member of the open file: past the zip local header, then the .npy header."""
    fh.seek(info.header_offset)
    local = fh.read(30)
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"bad zip local header for {info.filename}")
    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    major, _ = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(fh)
    offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects")
    if int(np.prod(shape)) * dtype.itemsize + offset - (info.header_offset + 30 + name_len + extra_len) > info.file_size:
        raise ValueError(f"{info.filename} is truncated")
    return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


class _FileRows:
    """Rows of a C-ordered 2-D table stored in an open file, read with pread (no page mapped).

    Indexing with an array of row numbers returns those rows, as the table itself would; the
    file is a duplicate descriptor of the one the table was read from (the checked file)."""

    def __init__(self, fh: BinaryIO, table: np.memmap) -> None:
        self.shape, self.dtype, self.ndim = table.shape, table.dtype, table.ndim
        self._offset, self._row_bytes = int(table.offset), int(table.shape[1]) * table.dtype.itemsize
        self._fd = os.dup(fh.fileno())
        weakref.finalize(self, os.close, self._fd)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        for i, r in enumerate(np.asarray(rows, dtype=np.int64).reshape(-1)):
            data = os.pread(self._fd, self._row_bytes, self._offset + int(r) * self._row_bytes)
            if len(data) != self._row_bytes:
                raise ValueError(f"row {int(r)} of the selector table is truncated")
            out[i] = np.frombuffer(data, self.dtype)
        return out


def _row_reader(fh: BinaryIO, table: np.ndarray) -> np.ndarray | _FileRows:
    """`table` itself, or a pread reader of its rows when it is a C-ordered 2-D memory map of `fh`."""
    if (isinstance(table, np.memmap) and table.ndim == 2 and table.flags.c_contiguous and hasattr(os, "pread")
            and table.shape[0] > 0):
        return _FileRows(fh, table)
    return table


def words_of(text: str) -> list[str]:
    """The selector's tokenisation (training uses this same function): lower-case ASCII letter runs."""
    return _WORD.findall(str(text).lower())


def pool_rows(rows: np.ndarray, vectors: np.ndarray, scales: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """The selector's task vector: weighted mean of the int8 word vectors at `rows`, L2-normalised
    (None for no rows). The one pooling of training (head fit) and the engine."""
    if len(rows) == 0:
        return None
    w = weights[rows]
    vec = (vectors[rows].astype(np.float32) * (scales[rows] * w)[:, None]).sum(0) / w.sum()
    return vec / max(float(np.linalg.norm(vec)), 1e-12)


@dataclass(frozen=True)
class Selection:
    """Robot scores (marginals, bundle robot order), the chosen set (indices, best first), how
    many of the task's words the selector knew, and the robot of each of the first plan steps
    (indices, step order; empty when the file has no plan-step head)."""

    scores: np.ndarray
    chosen: list[int]
    known_words: int
    step_robots: tuple[int, ...] = ()


class RobotSelector:
    """Task text -> robot-set selection. `select(text)` returns None when no word is known."""

    def __init__(self, source: str | Path | BinaryIO, num_robot_types: int) -> None:
        """`source`: the npz's path, or its open binary file (kept mapped, not closed here)."""
        if hasattr(source, "read"):
            name = getattr(source, "name", None)
            path = Path(name if isinstance(name, str) else SELECTOR_FILE)
        else:
            path = Path(source)
        try:  # a given open file stays open (the bundle's); a path is opened here and closed (the maps keep it)
            with contextlib.nullcontext(source) if hasattr(source, "read") else open(path, "rb") as fh:
                arrays = _read_arrays(fh)
                self._vector_rows = _row_reader(fh, arrays["vectors"])
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read {path.name}: {exc}") from exc
        self.words = arrays["words"]
        self.vectors = arrays["vectors"]
        self.scales = arrays["scales"].astype(np.float32)
        self.weights = arrays["weights"].astype(np.float32)
        self.head_w = arrays["head_w"].astype(np.float32)
        self.head_b = arrays["head_b"].astype(np.float32)
        self.sets = arrays["sets"].astype(np.float32)
        n, d = self.vectors.shape if self.vectors.ndim == 2 else (0, 0)
        s = self.head_w.shape[0]
        self.step_w = arrays["step_w"].astype(np.float32) if "step_w" in arrays else np.zeros((0, num_robot_types, d), np.float32)
        self.step_b = arrays["step_b"].astype(np.float32) if "step_b" in arrays else np.zeros((0, num_robot_types), np.float32)
        k = self.step_w.shape[0] if self.step_w.ndim == 3 else -1
        if (self.words.ndim != 1 or self.words.dtype.kind != "S" or len(self.words) != n or n == 0
                or self.vectors.dtype != np.int8 or self.scales.shape != (n,) or self.weights.shape != (n,)
                or self.head_w.shape != (s, d) or self.head_b.shape != (s,) or self.sets.shape != (s, num_robot_types)
                or s == 0 or self.step_w.shape != (k, num_robot_types, d) or self.step_b.shape != (k, num_robot_types)):
            raise ValueError(
                f"{path.name}: inconsistent shapes (words {self.words.shape} {self.words.dtype}, vectors "
                f"{self.vectors.shape} {self.vectors.dtype}, head {self.head_w.shape}, sets {self.sets.shape}, "
                f"step head {self.step_w.shape} {self.step_b.shape}; {num_robot_types} robot types)"
            )
        if not (np.all(np.isfinite(self.head_w)) and np.all(np.isfinite(self.step_w)) and np.all(np.isfinite(self.step_b))):
            raise ValueError(f"{path.name}: the heads hold NaN or infinite weights")
        if np.any(self.words[1:] <= self.words[:-1]):
            raise ValueError(f"{path.name}: words must be sorted and unique")
        inter = self.sets @ self.sets.T
        union = self.sets.sum(1)[:, None] + self.sets.sum(1)[None, :] - inter
        self._jaccard = inter / np.maximum(union, 1.0)  # [S, S]

    def _rows(self, text: str) -> np.ndarray:
        width = self.words.dtype.itemsize  # a longer word is unknown (never truncated into a match)
        keys = np.array([w.encode("ascii") for w in words_of(text) if len(w) <= width], dtype=self.words.dtype)
        if keys.size == 0:
            return np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.words, keys), len(self.words) - 1)
        return pos[self.words[pos] == keys]

    def embed(self, text: str) -> np.ndarray | None:
        """The normalised task vector [d], or None when no word of `text` is known."""
        return pool_rows(self._rows(text), self._vector_rows, self.scales, self.weights)

    def select(self, text: str) -> Selection | None:
        rows = self._rows(text)
        z = pool_rows(rows, self._vector_rows, self.scales, self.weights)
        if z is None:
            return None
        logits = self.head_w @ z + self.head_b
        p = np.exp(logits - logits.max())
        p /= p.sum()
        marginals = p @ self.sets
        best = int(np.argmax(self._jaccard @ p))
        members = [int(i) for i in np.flatnonzero(self.sets[best])]
        chosen = sorted(members, key=lambda r: (-marginals[r], r))
        steps = tuple(int(r) for r in np.argmax(self.step_w @ z + self.step_b, axis=1))
        return Selection(scores=marginals, chosen=chosen, known_words=int(rows.size), step_robots=steps)

    def select_task(self, task: str | None) -> Selection | None:
        """`select` for an operator task (the engine's and the fleet manager's one rule): None for
        no task or the camera's default task; whitespace normalised, cut at MAX_TASK_CHARS."""
        task = " ".join(str(task or "").split())
        if not task or task == DEFAULT_TASK:
            return None
        return self.select(task[:MAX_TASK_CHARS])


def bundle_selector(files: BundleFiles, num_robot_types: int) -> RobotSelector | None:
    """The opened bundle's text robot selector (listed and hashed in bundle.json), mapped from the
    file that was checked, or None when it ships none; BundleError when it is unreadable or
    inconsistent."""
    if SELECTOR_FILE not in files.meta["files"]:
        return None
    try:
        return RobotSelector(files.open(SELECTOR_FILE), num_robot_types)
    except ValueError as exc:
        raise BundleError(f"model bundle {files.path}: {exc}") from exc


def load_text_selector(bundle_dir: str | Path, robot_types: list[str]) -> tuple[RobotSelector | None, str]:
    """(the text robot selector of a bundle directory, the bundle's model_version), for a process that
    does not run the model (the fleet manager): the bundle is validated and hashed like the engine
    does, and its robot types must be `robot_types` in that order. The selector is None when the
    bundle ships none; BundleError for a bundle that cannot serve."""

    def load(files: BundleFiles) -> tuple[RobotSelector | None, str]:
        files.verify_all()
        types = [str(t) for t in files.meta.get("robot_types", [])]
        if types != list(robot_types):
            raise BundleError(f"model bundle {files.path}: robot_types {types} are not {list(robot_types)}")
        return bundle_selector(files, len(types)), str(files.meta.get("model_version", ""))

    return load_consistent(bundle_dir, load)
