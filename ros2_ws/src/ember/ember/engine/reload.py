"""Picking up a new model bundle in a running process (the incident node's engine, the fleet
manager's text robot selector) without a restart.

`BundleSlot` holds what was loaded from a bundle directory (an EmberEngine, a RobotSelector) and
its model version. `check()` is cheap: it compares the directory's stat identity (device, inode,
mtime) and that of every entry in it (inode, size, mtime, ctime) with what was last seen, and hashes
nothing; a change is loaded once it was seen unchanged at two checks in a row (a copy still in
progress is not loaded half-way), and a bundle that failed to load is not tried again until the
directory changes again. `reload()` loads now (an operator's request). A new value is loaded and
checked completely (`load` raises BundleError for anything wrong) while the old one keeps serving;
it then replaces the old one under the slot's lock, which `using()` holds for the length of a use
(an analysis), so a use never sees a half-swapped state; the old value is released after. A bundle
that fails to load never replaces the value: the old one keeps serving and `error` names the problem.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from ember.engine.bundle import BundleError

if TYPE_CHECKING:
    from ember.engine.engine import EmberEngine

T = TypeVar("T")
Stamp = tuple


def bundle_stamp(path: str | Path) -> Stamp:
    """What identifies the bundle now at `path`, from stat calls only: the directory's (device,
    inode, mtime) and each entry's (name, inode, size, mtime, ctime). A swapped-in directory (a new
    inode), a file added, removed or rewritten in place all change it; a missing or unreadable
    directory is a stamp of its own."""
    try:
        st = os.stat(path)
        entries = []
        with os.scandir(path) as it:
            for entry in it:
                s = entry.stat()
                entries.append((entry.name, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns))
    except OSError as exc:
        return ("unreadable", type(exc).__name__, exc.errno)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, tuple(sorted(entries)))


@dataclass(frozen=True)
class Outcome:
    """What a load attempt did: `ok` (the new value serves now) and a one-line `message` naming the
    versions (old -> new) or why the new bundle was refused (the old value keeps serving)."""

    ok: bool
    old_version: str
    new_version: str
    message: str
    changed: bool = True
    """False for a reload asked of the bundle already running (nothing was loaded)"""

    def line(self, what: str) -> str:
        """`<what> reloaded|unchanged|reload failed: <message>`, e.g. what = "model"."""
        verb = ("reloaded" if self.changed else "unchanged") if self.ok else "reload failed"
        return f"{what} {verb}: {self.message}"


class BundleSlot(Generic[T]):
    """The value loaded from a bundle directory, swapped for a new load between two uses.

    `load(path) -> (value, model_version)` raises BundleError (a one-line reason) for a bundle that
    cannot serve; `release()` runs after an old value was dropped (handing its memory back)."""

    def __init__(self, path: str | Path, load: Callable[[Path], tuple[T, str]],
                 release: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self._load = load
        self._release = release
        self._lock = threading.Lock()  # held by a use (an analysis) and by the swap
        self._reloading = threading.Lock()  # one load at a time
        self._value: T | None = None
        self.version = ""
        self.loaded = False
        self.error = ""
        """the problem of the last bundle that was refused ('' once a load succeeds)"""
        self._loaded_stamp: Stamp | None = None
        self._failed_stamp: Stamp | None = None
        self._seen: Stamp | None = None

    @contextmanager
    def using(self) -> Iterator[T | None]:
        """The current value, not replaced until the block ends."""
        with self._lock:
            yield self._value

    @property
    def value(self) -> T | None:
        """The current value (for a use that needs no lock: reading it once)."""
        return self._value

    def load_initial(self) -> T:
        """The first load; BundleError when it fails (a process that cannot start without it stops)."""
        outcome = self.reload()
        if not outcome.ok:
            raise BundleError(self.error)
        return self._value  # type: ignore[return-value]

    def check(self) -> Outcome | None:
        """Load the bundle if the directory changed (stat only) and has stayed the same since the last
        check; None when there is nothing to load."""
        stamp = bundle_stamp(self.path)
        previous, self._seen = self._seen, stamp
        if stamp in (self._loaded_stamp, self._failed_stamp) or stamp != previous:
            return None
        if not self._reloading.acquire(blocking=False):  # a reload is running (the service)
            return None
        try:
            return self._reload(stamp)
        finally:
            self._reloading.release()

    def reload(self) -> Outcome:
        """Load the bundle now (an operator's request, the first load), unless it is the one running:
        the same stat identity as at its load (then nothing is loaded, `changed` False)."""
        with self._reloading:
            stamp = bundle_stamp(self.path)
            if self.loaded and stamp == self._loaded_stamp:
                self._seen = stamp
                return Outcome(True, self.version, self.version, f"{self.version or '?'} already running: the "
                               f"bundle has not changed since it was loaded ({self.path})", changed=False)
            return self._reload(stamp)

    def _reload(self, stamp: Stamp) -> Outcome:
        """Load the bundle of `stamp` (taken before the load: a swap during it is seen at the next check)."""
        old_version = self.version
        self._seen = stamp
        try:
            value, version = self._load(self.path)
        except Exception as exc:  # noqa: BLE001 - whatever fails (MemoryError too), the old value keeps serving
            problem = str(exc) if isinstance(exc, BundleError) else f"model bundle {self.path}: {type(exc).__name__}: {exc}"
            self._failed_stamp, self.error = stamp, problem
            kept = f"still running {old_version or '?'}" if self.loaded else "nothing loaded"
            return Outcome(False, old_version, "", f"{problem} ({kept})")
        with self._lock:  # between two uses
            old, self._value = self._value, value
            self.version, self.loaded = version, True
        self._loaded_stamp, self._failed_stamp, self.error = stamp, None, ""
        del old, value
        if self._release is not None:
            self._release()
        return Outcome(True, old_version, version, f"{old_version or '?'} -> {version} ({self.path})")


def load_checked_engine(path: Path, threads: int = 1) -> tuple[EmberEngine, str]:
    """(EmberEngine of the bundle, its model_version), checked completely before it may serve: the
    engine's own load checks (every file's sha256, format, robot_types order, graph shapes), then one
    analysis of a blank image (an operator the runtime cannot run fails here, not on the robot's next
    frame). BundleError for anything wrong."""
    import numpy as np

    from ember.engine.engine import EmberEngine

    engine = EmberEngine(path, threads=threads)
    try:
        engine.analyze(np.zeros((engine.image_size, engine.image_size, 3), np.uint8), max_new_tokens=1)
    except Exception as exc:  # noqa: BLE001 - any failure refuses the bundle
        raise BundleError(f"model bundle {path}: a test analysis failed ({type(exc).__name__}: {exc})") from exc
    return engine, engine.model_version


def release_engine_memory() -> None:
    """Hand the memory of a dropped engine back to the OS (the engine's own gc + malloc_trim)."""
    from ember.engine.engine import release_free_memory

    release_free_memory()


def engine_slot(path: str | Path, threads: int = 1) -> BundleSlot[EmberEngine]:
    """A BundleSlot of checked EmberEngines for the bundle at `path`, first engine loaded (BundleError
    when it cannot be): what a process that analyses (the incident node, ember-serve) swaps its engine in."""
    slot: BundleSlot[EmberEngine] = BundleSlot(path, lambda p: load_checked_engine(p, threads), release_engine_memory)
    slot.load_initial()
    return slot
