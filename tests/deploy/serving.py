"""A real `ember-serve` process on 127.0.0.1 for the tests: start it, find its port, stop it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT


def serve_command() -> list[str]:
    """The installed `ember-serve` script of this venv, else `python -m ember.serve.app`."""
    exe = Path(sys.executable).parent / "ember-serve"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "ember.serve.app"]


@dataclass
class Server:
    """A started ember-serve: its process, base URL and everything it printed so far."""

    proc: subprocess.Popen
    base: str
    port: int
    output: list[str] = field(default_factory=list)


@contextmanager
def running_server(bundle: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """ember-serve on a free loopback port; waits for uvicorn's "running on" line, kills it on exit."""
    cmd = [*serve_command(), "--bundle", str(bundle), "--host", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
            seen.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, f"ember-serve exited early:\n{''.join(seen)}"
                continue
            m = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, f"ember-serve did not start:\n{''.join(seen)}"
        yield Server(proc, f"http://127.0.0.1:{port}", port, seen)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
