"""Small filesystem helpers shared by the bundle exporter and the deploy packager."""

from __future__ import annotations

import shutil
from pathlib import Path


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
