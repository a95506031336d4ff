"""Reading recordings that did not end cleanly, and what rosbag2 writes that rosbags refuses.

* an mcap whose recorder died before writing summary and footer is read up to its last complete
  record (through a view that appends a summary-less footer);
* an sqlite3 file with a `-wal` journal (rosbag2's resilient preset, a killed recorder) is read
  from a temporary copy with the journal applied (rosbags opens sqlite immutable, ignoring it);
* message definitions rosbag2 stored with encoding `unknown` (it found no definition) count as
  absent: standard types then use the built-in definitions, custom ones are skipped.
"""

from __future__ import annotations

import io
import shutil
import sqlite3
import struct
import tempfile
from contextlib import ExitStack
from pathlib import Path

import yaml
from rosbags.rosbag2 import ReaderError
from rosbags.rosbag2 import storage_mcap as _storage_mcap
from rosbags.rosbag2.storage_mcap import McapReader

from ember.bag.errors import BagError


def bag_metadata(path: Path) -> dict:
    """The rosbag2_bagfile_information of a bag directory's metadata.yaml ({} if unreadable)."""
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return info if isinstance(info, dict) else {}


_MCAP_MAGIC = b"\x89MCAP0\r\n"
_MCAP_FOOTER = b"\x02" + struct.pack("<QQQI", 20, 0, 0, 0) + _MCAP_MAGIC
"""A footer without summary (summary_start 0): rosbags then scans the data section."""


def _mcap_complete_end(fh) -> int | None:
    """End offset of the last complete record of an mcap that lacks its footer; None if it has one."""
    size = fh.seek(0, io.SEEK_END)
    fh.seek(max(0, size - 8))
    if fh.read(8) == _MCAP_MAGIC:
        return None
    pos = len(_MCAP_MAGIC)
    while pos + 9 <= size:
        fh.seek(pos)
        op = fh.read(1)[0]
        (length,) = struct.unpack("<Q", fh.read(8))
        if op == 0x0F or pos + 9 + length > size:  # DataEnd, or the record the recorder was writing
            break
        pos += 9 + length
    return pos


class _Footered(io.RawIOBase):
    """A read-only view of the first `end` bytes of a file followed by a summary-less footer."""

    def __init__(self, raw, end: int) -> None:
        super().__init__()
        self._raw, self._end, self._pos = raw, end, 0
        self._size = end + len(_MCAP_FOOTER)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf) -> int:
        want = min(len(buf), max(0, self._size - self._pos))
        out = b""
        if self._pos < self._end:
            self._raw.seek(self._pos)
            out = self._raw.read(min(want, self._end - self._pos))
        if len(out) < want:
            start = self._pos + len(out) - self._end
            out += _MCAP_FOOTER[start:start + want - len(out)]
        buf[: len(out)] = out
        self._pos += len(out)
        return len(out)

    def close(self) -> None:
        self._raw.close()
        super().close()


class UnfinishedMcapReader(McapReader):
    """McapReader that also reads an mcap whose recorder died before writing summary and footer."""

    unfinished = False

    def open(self) -> None:
        try:
            raw = self.path.open("rb")
        except OSError as err:
            raise ReaderError(f"Could not open file {str(self.path)!r}: {err.strerror}.") from err
        try:
            end = _mcap_complete_end(raw)
            raw.seek(0)
            self.unfinished = end is not None
            self.bio = raw if end is None else io.BufferedReader(_Footered(raw, end))
            self._open()
        except BaseException:
            raw.close()
            self.bio = None
            raise


def _lenient_mcap_msgdef(schema):
    """rosbags' get_msgdef, with the `unknown` encoding of definitions rosbag2 did not find as none."""
    if schema is not None and schema.encoding not in ("ros2msg", "ros2idl", "omgidl", ""):
        schema = None
    return _strict_mcap_msgdef(schema)


# rosbags' McapReader calls the module-level get_msgdef while it parses channels (no hook to
# override per reader), and raises KeyError for the `unknown` encoding: replaced here, for every
# reader of this process, by the lenient version (it changes nothing for the encodings rosbags
# reads). Checked against the pinned rosbags 0.11.9; recheck on upgrade (test_user_bags.py).
_strict_mcap_msgdef = _storage_mcap.get_msgdef
_storage_mcap.get_msgdef = _lenient_mcap_msgdef

_KNOWN_ENCODINGS = ("ros2msg", "ros2idl")


def _sqlite_needs_repair(db: Path) -> bool:
    """True for a .db3 with a non-empty -wal journal or definitions in an encoding rosbags rejects."""
    wal = db.with_name(db.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        return True
    try:
        con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
        try:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE name='message_definitions'").fetchone():
                return False
            return bool(con.execute("SELECT count(*) FROM message_definitions WHERE encoding NOT IN (?, ?)",
                                    _KNOWN_ENCODINGS).fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return False  # rosbags reports what is wrong with it


def _repaired_sqlite(db: Path, folder: Path) -> Path:
    """A copy of `db` in `folder` with its -wal journal applied and unknown-encoding definitions blanked."""
    copy = folder / db.name
    wal = db.with_name(db.name + "-wal")
    try:
        shutil.copyfile(db, copy)
        if wal.is_file():
            shutil.copyfile(wal, folder / wal.name)
    except OSError as exc:  # a full /tmp, typically: the copy is as large as the recording
        raise BagError(f"{db} has a -wal journal to apply, in a copy under {folder.parent} (set TMPDIR to "
                       f"a roomier place), and copying failed: {exc}") from None
    try:
        con = sqlite3.connect(copy)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if con.execute("SELECT 1 FROM sqlite_master WHERE name='message_definitions'").fetchone():
                con.execute("UPDATE message_definitions SET encoding = 'ros2msg', encoded_message_definition = '' "
                            "WHERE encoding NOT IN (?, ?)", _KNOWN_ENCODINGS)
            con.commit()
            con.execute("PRAGMA journal_mode=DELETE")
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise BagError(f"{db} is truncated or corrupt: sqlite3 cannot apply its journal: {exc}") from None
    return copy


def readable_target(target: Path, stack: ExitStack) -> Path:
    """`target`, or a temporary stand-in whose sqlite3 files are repaired (see `_repaired_sqlite`)."""
    if target.is_file():
        if target.suffix != ".db3" or not _sqlite_needs_repair(target):
            return target
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ember-bag-")))
        return _repaired_sqlite(target, folder)
    meta = bag_metadata(target)
    files = [target / Path(str(p)).name for p in meta.get("relative_file_paths") or []]
    if meta.get("storage_identifier") != "sqlite3" or not any(f.suffix == ".db3" and f.is_file()
                                                               and _sqlite_needs_repair(f) for f in files):
        return target
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ember-bag-")))
    shutil.copyfile(target / "metadata.yaml", folder / "metadata.yaml")
    for f in files:
        if f.is_file() and f.suffix == ".db3" and _sqlite_needs_repair(f):
            _repaired_sqlite(f, folder)
        elif f.exists():
            (folder / f.name).symlink_to(f.resolve())
    return folder
