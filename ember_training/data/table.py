"""Samples stored as a few numpy arrays (a column per field), not as one Python object per row.

A DataLoader worker is a fork of the training process: reading a Python object writes its reference
count, so every page of a list of per-row objects that a worker reads becomes a private copy in that
worker. Over an epoch each of the N workers holds its own copy of the whole list (Incidents1M's 1M
rows: about 1 GiB per worker). A SampleTable's rows live in a handful of numpy buffers whose pages
are only read, so the workers keep sharing them with the main process (nanoGPT keeps its tokens in
one memmap for the same reason). `table[i]` builds the i-th Sample afresh, equal to the loaded one.

`save` writes the columns as plain .npy files and `load` memory-maps them: the ranks of a node then
share one copy of the rows in the page cache (data/shared.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ember.labels import NUM_INCIDENTS, NUM_PLACES, NUM_ROBOT_TYPES

from .common import Sample

_LABELS = (("incidents", NUM_INCIDENTS), ("places", NUM_PLACES), ("robots", NUM_ROBOT_TYPES))
_STRINGS = ("uid", "source", "image", "task", "target", "extras")
_STRING_PARTS = ("blob", "offsets", "present")


class StringColumn:
    """Strings (or None) as one UTF-8 buffer with offsets."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, present: np.ndarray) -> None:
        self.blob, self.offsets, self.present = blob, offsets, present

    @classmethod
    def of(cls, values: Iterable[str | None]) -> StringColumn:
        encoded = [v.encode("utf-8", "surrogatepass") if v is not None else None for v in values]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) if e is not None else 0 for e in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(e for e in encoded if e), np.uint8).copy()
        return cls(blob, offsets, np.array([e is not None for e in encoded], bool))

    def __len__(self) -> int:
        return len(self.present)

    def __getitem__(self, i: int) -> str | None:
        if not self.present[i]:
            return None
        return self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8", "surrogatepass")

    def take(self, rows: np.ndarray) -> StringColumn:
        """The strings of `rows` (int64 indices), in that order."""
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return StringColumn(self.blob[gather], offsets, self.present[rows])

    @staticmethod
    def concat(columns: Sequence[StringColumn]) -> StringColumn:
        """The strings of `columns` one after the other."""
        shift = np.cumsum([0] + [len(c.blob) for c in columns[:-1]])
        offsets = np.concatenate([np.zeros(1, np.int64)] + [c.offsets[1:] + d for c, d in zip(columns, shift, strict=True)])
        return StringColumn(np.concatenate([c.blob for c in columns]), offsets,
                            np.concatenate([c.present for c in columns]))

    def nbytes(self) -> int:
        return self.blob.nbytes + self.offsets.nbytes + self.present.nbytes

    def values(self) -> Iterator[str | None]:
        """Every string in order (one bytes copy of the blob, not a numpy slice per row)."""
        blob, offsets, present = self.blob.tobytes(), self.offsets.tolist(), self.present.tolist()
        for i, here in enumerate(present):
            yield blob[offsets[i] : offsets[i + 1]].decode("utf-8", "surrogatepass") if here else None


def _extras(s: Sample) -> str | None:
    """The robot-selection fields (rare rows) as JSON, None when they are all empty."""
    if not (s.robot_set or s.steps or s.capabilities):
        return None
    return json.dumps([list(s.robot_set), [list(step) for step in s.steps],
                       [[k, v] for k, v in s.capabilities.items()]], ensure_ascii=False)


def _unpack_extras(text: str | None) -> dict:
    if text is None:
        return {}
    robot_set, steps, caps = json.loads(text)
    return {"robot_set": tuple(robot_set), "steps": tuple(tuple(step) for step in steps),
            "capabilities": {int(k): list(v) for k, v in caps}}


class SampleTable(Sequence[Sample]):
    """Loaded samples, row order kept, in columns: strings in StringColumns, label vectors as int8
    matrices with a presence mask, the robot-selection fields of text-only rows as JSON."""

    def __init__(self, columns: dict[str, object], n: int) -> None:
        self._c = columns
        self._n = n

    def _arrays(self) -> dict[str, np.ndarray]:
        """Every numpy buffer by file stem ('uid.blob', 'incidents', ...)."""
        out: dict[str, np.ndarray] = {}
        for name, col in self._c.items():
            if isinstance(col, StringColumn):
                out.update({f"{name}.{part}": getattr(col, part) for part in _STRING_PARTS})
            else:
                out[name] = col
        return out

    def save(self, folder: Path) -> None:
        """Write the columns into `folder` as plain .npy files, one per buffer (`load` maps them)."""
        folder.mkdir(parents=True, exist_ok=True)
        for stem, array in self._arrays().items():
            np.save(folder / f"{stem}.npy", np.ascontiguousarray(array))

    @classmethod
    def load(cls, folder: Path) -> SampleTable:
        """The table `save` wrote, its buffers memory-mapped read-only (np.load mmap_mode="r"): the pages
        are the page cache's, shared by every process that maps the files (ranks, loader workers)."""
        def arr(stem: str) -> np.ndarray:
            return np.load(folder / f"{stem}.npy", mmap_mode="r")

        cols: dict[str, object] = {name: StringColumn(*(arr(f"{name}.{part}") for part in _STRING_PARTS))
                                   for name in _STRINGS}
        for name, _ in _LABELS:
            cols[name], cols[name + "_present"] = arr(name), arr(name + "_present")
        return cls(cols, len(cols["uid"]))

    @property
    def mapped(self) -> bool:
        """Whether the rows are memory-mapped files (`load`), not buffers of this process."""
        return isinstance(self._c["uid"].blob, np.memmap)

    @classmethod
    def of(cls, samples: Iterable[Sample] | SampleTable) -> SampleTable:
        """A table of `samples` (returned as it is when it is one already)."""
        if isinstance(samples, SampleTable):
            return samples
        rows = list(samples)
        cols: dict[str, object] = {
            name: StringColumn.of(getattr(s, name) for s in rows) for name in ("uid", "source", "image", "task", "target")
        }
        cols["extras"] = StringColumn.of(_extras(s) for s in rows)
        for name, size in _LABELS:
            matrix = np.full((len(rows), size), -1, np.int8)
            present = np.zeros(len(rows), bool)
            for i, s in enumerate(rows):
                vec = getattr(s, name)
                if vec is not None:
                    matrix[i], present[i] = vec, True
            cols[name], cols[name + "_present"] = matrix, present
        return cls(cols, len(rows))

    @classmethod
    def concat(cls, tables: Sequence[SampleTable]) -> SampleTable:
        """The rows of `tables` one after the other (memory-mapped tables are joined without a copy)."""
        if len(tables) == 1:
            return tables[0]
        if not tables:
            return cls.of([])
        if any(t.mapped for t in tables):
            return JoinedTable(tables)
        cols = {name: (StringColumn.concat([t._c[name] for t in tables]) if isinstance(col, StringColumn)
                       else np.concatenate([t._c[name] for t in tables]))
                for name, col in tables[0]._c.items()}
        return cls(cols, sum(len(t) for t in tables))

    def __len__(self) -> int:
        return self._n

    def _row(self, i: int) -> int:
        """Row index `i` (negative from the end) checked against the table's length."""
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"row {i} of {self._n}")
        return i

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(np.arange(self._n)[i])
        i = self._row(i)
        c = self._c
        labels = {name: c[name][i].copy() if c[name + "_present"][i] else None for name, _ in _LABELS}
        return Sample(uid=c["uid"][i], source=c["source"][i], image=c["image"][i], task=c["task"][i],
                      target=c["target"][i], **labels, **_unpack_extras(c["extras"][i]))

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(self._n))

    def take(self, rows: Sequence[int] | np.ndarray) -> SampleTable:
        """The table of the given rows, in that order."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        cols = {name: (col.take(rows) if isinstance(col, StringColumn) else col[rows]) for name, col in self._c.items()}
        return SampleTable(cols, len(rows))

    def text_only(self) -> np.ndarray:
        """bool per row: no image (robot-selection rows, paired with an incident scene)."""
        return ~self._c["image"].present

    def nbytes(self) -> int:
        """Bytes held by the columns."""
        return sum(col.nbytes() if isinstance(col, StringColumn) else col.nbytes for col in self._c.values())

    def digest_rows(self) -> Iterator[bytes]:
        """Per row, the bytes StageDataset.digest hashes: repr((uid, image file name, task, target, robot_set,
        steps)) + each label vector's bytes or b"-", as they were computed from the Samples, read from the
        columns (no Sample per row)."""
        c = self._c
        labels = [(c[name].tobytes(), c[name].shape[1], c[name + "_present"].tolist()) for name, _ in _LABELS]
        texts = zip(*(c[name].values() for name in ("uid", "image", "task", "target", "extras")), strict=True)
        for i, (uid, image, task, target, extras) in enumerate(texts):
            name = "" if image is None else _file_name(image)
            more = _unpack_extras(extras)
            key = repr((uid, name, task, target, more.get("robot_set", ()), more.get("steps", ()))).encode()
            yield key + b"".join(blob[i * size : (i + 1) * size] if present[i] else b"-"
                                 for blob, size, present in labels)


def digest_rows(rows: Sequence[Sample]) -> Iterator[bytes]:
    """SampleTable.digest_rows of a table, the same bytes from Sample objects otherwise (the formula)."""
    if isinstance(rows, SampleTable):
        yield from rows.digest_rows()
        return
    for s in rows:
        name = Path(s.image).name if s.image is not None else ""
        labels = b"".join(v.tobytes() if v is not None else b"-" for v in (s.incidents, s.places, s.robots))
        yield repr((s.uid, name, s.task, s.target, s.robot_set, s.steps)).encode() + labels


def _file_name(path: str) -> str:
    """Path(path).name, without a Path object when the last part is a plain name."""
    tail = path.rsplit("/", 1)[-1]
    return tail if tail not in ("", ".") and os.sep == "/" else Path(path).name


class JoinedTable(SampleTable):
    """Tables one after the other without copying their buffers (memory-mapped ones stay shared)."""

    def __init__(self, tables: Sequence[SampleTable]) -> None:
        self._parts = [p for t in tables for p in (t._parts if isinstance(t, JoinedTable) else [t])]
        self._starts = np.cumsum([0] + [len(t) for t in self._parts])
        self._n = int(self._starts[-1])

    @property
    def _c(self) -> dict[str, object]:  # type: ignore[override]
        return SampleTable.concat([t.take(np.arange(len(t))) if t.mapped else t for t in self._parts])._c

    @property
    def mapped(self) -> bool:
        return any(t.mapped for t in self._parts)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(np.arange(self._n)[i])
        i = self._row(i)
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._parts[part][i - int(self._starts[part])]

    def text_only(self) -> np.ndarray:
        return np.concatenate([t.text_only() for t in self._parts])

    def nbytes(self) -> int:
        return sum(t.nbytes() for t in self._parts)

    def digest_rows(self) -> Iterator[bytes]:
        for t in self._parts:
            yield from t.digest_rows()
