"""Small filesystem helpers shared by the bundle exporter, the deploy packager, the reports and the
readers of users' data files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any


def replace_directory(staged: Path, dst: Path) -> None:
    """Move a fully written `staged` directory to `dst`, replacing what is there.

    The old `dst` is renamed aside first and removed only after the new one is in place, so a
    crash leaves either the old or the new directory at `dst`, never a half-written one.
    """
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        staged.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(dst)


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
