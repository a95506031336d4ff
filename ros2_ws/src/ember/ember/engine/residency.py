"""Unmap the clean file pages a process no longer touches (Linux; a no-op elsewhere).

Importing numpy and onnxruntime and building the sessions run code that an analysis never runs
again (module initialisers, the ONNX schema registry, graph optimizers, protobuf parsing): those
shared-library pages stay mapped, and so counted in the resident set, for the life of the process.
`drop_clean_file_pages` tells the kernel (madvise MADV_DONTNEED) that the process no longer needs
the pages of every read-only file mapping that holds only the file's own bytes: the pages stay in
the page cache, and a page that runs again is mapped back on its next use (a minor fault). Only
mappings that cannot hold data of the process's own are touched: file-backed, not writable, no
anonymous (copy-on-write) page and no dirty page, so dropping them loses nothing.
"""

from __future__ import annotations

import ctypes
import logging
import re

log = logging.getLogger(__name__)
SMAPS = "/proc/self/smaps"
MADV_DONTNEED = 4
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")
_MUST_BE_ZERO = ("Anonymous", "Private_Dirty", "Shared_Dirty")


def _madvise():
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # no dynamic libc symbols (not Linux/glibc-like)
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def clean_file_mappings(smaps_text: str) -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of the mappings of `smaps_text` (a /proc/PID/smaps) whose pages
    are all unmodified file bytes: backed by a file, not writable, no anonymous or dirty page."""
    out: list[tuple[int, int, int]] = []
    current: dict | None = None

    def close(vma: dict | None) -> None:
        if vma and vma["ok"] and vma["rss"] > 0 and all(vma.get(k) == 0 for k in _MUST_BE_ZERO):
            out.append((vma["start"], vma["end"], vma["rss"]))

    for line in smaps_text.splitlines():
        m = _HEADER.match(line)
        if m:
            close(current)
            path = m[4].strip()
            current = {
                "start": int(m[1], 16),
                "end": int(m[2], 16),
                # a file (not [heap], [stack], [vdso] or anonymous), never writable, not deleted
                "ok": path.startswith("/") and "w" not in m[3] and not path.endswith("(deleted)"),
                "rss": -1,
            }
        elif current is not None and ":" in line:
            key, value = line.split(":", 1)
            if key == "Rss":
                current["rss"] = int(value.split()[0]) * 1024
            elif key in _MUST_BE_ZERO:
                current[key] = int(value.split()[0])
    close(current)
    return out


def drop_clean_file_pages() -> int:
    """Unmap the resident pages of this process's clean read-only file mappings (see the module
    doc); returns the resident bytes dropped (0 where there is no /proc/self/smaps or madvise)."""
    madvise = _madvise()
    if madvise is None:
        return 0
    try:
        with open(SMAPS, encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return 0
    dropped = 0
    for start, end, rss in clean_file_mappings(text):
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            dropped += rss
    log.debug("unmapped %.1f MiB of clean file pages", dropped / 2**20)
    return dropped
