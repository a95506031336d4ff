"""Opening and writing rosbag2 bags (sqlite3 and mcap) with errors that say what is wrong.

A bag is a directory with metadata.yaml and storage files, as `ros2 bag record` writes it
(split into several files, zstd-compressed per file or per message: rosbags reads them all).
A bare `.mcap` / `.db3` file is accepted too, and so is a directory whose metadata.yaml is
missing (a recording killed before it closed): its single storage file is read directly.

Interrupted recordings (an mcap without footer, an sqlite3 file with its `-wal` journal) are
read as far as they were written, and definitions rosbag2 stored as `unknown` count as absent:
see ember.bag.recovery.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer, WriterError
from rosbags.typesys.store import Typestore

from ember.bag.errors import BagError
from ember.bag.recovery import UnfinishedMcapReader, bag_metadata, readable_target
from ember.bag.types import bag_typestore

STORAGES = ("mcap", "sqlite3")
_SUFFIX = {".mcap": "mcap", ".db3": "sqlite3"}
BAG_WRITER_VERSION = 9
"""rosbag2 metadata version written (Jazzy and Kilted read it)."""

_ZERO = QosTime(0, 0)


def reliable_qos(depth: int = 10, transient_local: bool = False) -> Qos:
    """The offered QoS recorded for a reliable publisher."""
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        _ZERO,
        _ZERO,
        QosLiveliness.AUTOMATIC,
        _ZERO,
        False,
    )


def _storage_path(path: Path) -> Path:
    """What rosbags can open for `path` (the directory, or its lone storage file)."""
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_file():
        if path.suffix not in _SUFFIX:
            raise BagError(f"{path} is not a rosbag2 storage file (expected .mcap or .db3)")
        return path
    if (path / "metadata.yaml").is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIX)
    if len(files) == 1:
        return files[0]
    what = "no .mcap or .db3 file" if not files else f"{len(files)} storage files and no metadata to order them"
    raise BagError(f"{path} is not a rosbag2 bag: no metadata.yaml and {what}")


def storage_of(path: Path) -> str:
    """'mcap' or 'sqlite3' for a bag directory or storage file."""
    path = _storage_path(Path(path))
    if path.is_dir() and bag_metadata(path).get("storage_identifier") in STORAGES:
        return bag_metadata(path)["storage_identifier"]  # file-compressed bags hold .mcap.zstd / .db3.zstd
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in _SUFFIX)
    if not files:
        raise BagError(f"bag {path} holds no .mcap or .db3 file")
    return _SUFFIX[files[0].suffix]


@dataclass
class OpenBag:
    """An open bag: its reader, connections and a typestore for what it holds."""

    path: Path
    reader: Reader
    typestore: Typestore
    unknown_types: set[str]
    notes: list[str] = field(default_factory=list)
    """What was read differently from a complete bag (an unfinished recording, say)."""

    @property
    def connections(self) -> list[Connection]:
        return list(self.reader.connections)

    def connections_on(self, topic: str) -> list[Connection]:
        return [c for c in self.reader.connections if c.topic == topic]

    def messages(self, connections: list[Connection] | None = None) -> Iterator[tuple[Connection, int, bytes]]:
        """(connection, timestamp ns, raw CDR) in time order; BagError if the bag breaks mid-way."""
        try:
            yield from self.reader.messages(connections=connections or ())
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - sqlite3/mcap/zstd errors of a damaged file
            raise BagError(f"bag {self.path} is truncated or corrupt: reading failed with {type(exc).__name__}: {exc}") from None

    def deserialize(self, raw: bytes, msgtype: str) -> object:
        """A rosbags message object (numpy arrays for byte sequences)."""
        try:
            return self.typestore.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # noqa: BLE001 - the serde raises assorted errors on bad bytes
            raise BagError(f"bag {self.path}: a {msgtype} message does not deserialize ({exc})") from None


@contextmanager
def open_bag(path: str | Path) -> Iterator[OpenBag]:
    """Open a bag for reading; BagError names the problem (missing, truncated, not a bag)."""
    path = Path(path)
    with ExitStack() as stack:
        target = readable_target(_storage_path(path), stack)
        reader = Reader(target)
        if target.suffix == ".mcap":  # a lone mcap: perhaps a recording killed before it wrote its footer
            reader.storage = UnfinishedMcapReader(target)
        try:
            reader.open()
        except Exception as exc:  # noqa: BLE001 - ReaderError, sqlite3.DatabaseError, struct.error, ...
            raise BagError(f"bag {path} is truncated or corrupt: {type(exc).__name__}: {exc}") from None
        notes = []
        if getattr(reader.storage, "unfinished", False):
            notes.append(f"{path} is an unfinished recording (no mcap summary or footer): read up to its last "
                         f"complete record, {reader.message_count} messages")
        if target != _storage_path(path):
            notes.append(f"{path}: sqlite3 journal (-wal) or unknown-encoding definitions applied in a temporary copy")
        try:
            store, unknown = bag_typestore(reader.connections)
            yield OpenBag(path, reader, store, unknown, notes)
        finally:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing a broken file; the first error is the one to report
                pass


def create_writer(path: str | Path, storage: str) -> Writer:
    """An open rosbags Writer (rosbag2 v9) for a new bag directory; BagError if it exists."""
    if storage not in STORAGES:
        raise BagError(f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}")
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    try:
        writer = Writer(Path(path), version=BAG_WRITER_VERSION, storage_plugin=plugin)
        writer.open()
    except (WriterError, OSError) as exc:
        raise BagError(f"cannot create bag {path}: {exc}") from None
    return writer
