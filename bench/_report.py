"""What every benchmark's JSON record shares (imported by the bench scripts; `make bench` skips
files starting with '_')."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The machine a result was measured on, and when."""
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_json(path: str | Path, record: dict[str, Any]) -> None:
    """Write a benchmark's record (its folder created) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
