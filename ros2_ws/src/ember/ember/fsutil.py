"""Small filesystem helpers shared by the bundle exporter, the deploy packager, the reports and the
readers of users' data files."""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` to disk (before it is renamed into place: after a
    power loss the renamed bundle must not hold empty files)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath)


def fsync_path(path: str | Path) -> None:
    """Flush one file or directory (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system or
    the filesystem cannot, for the caller to fall back on two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 / not Linux
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def replace_directory(staged: Path, dst: Path) -> None:
    """Move a fully written `staged` directory to `dst`, replacing what is there.

    `staged` is flushed to disk first. On Linux the two directories swap places in one atomic step
    (renameat2 RENAME_EXCHANGE): a reader (an engine starting) finds the old or the new directory at
    `dst`, never none, and a crash at any point leaves one of them there. Elsewhere the old `dst` is
    renamed aside first and removed after the new one is in place (a moment without `dst`).
    """
    _fsync_tree(staged)
    if not dst.exists():
        staged.rename(dst)
    elif _exchange(staged, dst):
        shutil.rmtree(staged, ignore_errors=True)  # now the old directory
    else:
        old = dst.with_name(f".{dst.name}.old.{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        staged.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(dst.parent)


def _finite(obj: Any) -> Any:
    """`obj` with every NaN/inf float replaced by None (recursively through dicts, lists, tuples)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj: Any, indent: int = 1) -> str:
    """Standard JSON for a result file: a metric that is NaN or inf (no data to average) is written
    as null, never as the `NaN` token that json.dumps emits and strict parsers (jq, JavaScript,
    Go) refuse."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def decode_text(raw: bytes) -> str:
    """A user's text file as Windows tools also write it: UTF-8 with or without a BOM (Notepad,
    Excel), or UTF-16 with a BOM (PowerShell 5's `>`). UnicodeDecodeError for anything else."""
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    return raw.decode(encoding)
