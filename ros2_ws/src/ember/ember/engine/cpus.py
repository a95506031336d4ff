"""How many CPUs this process may really use: its CPU affinity and its cgroup's CPU quota.

`os.cpu_count()` counts the machine's CPUs, not the ones a process may run on: `taskset -c 0`,
a systemd `CPUAffinity=` or docker `--cpuset-cpus` narrow the affinity mask, and docker
`--cpus=1` / systemd `CPUQuota=` set a cgroup quota (cgroup v2 `cpu.max`, v1
`cpu.cfs_quota_us`). onnxruntime sizes nothing by itself here (the engine passes a thread
count), so the engine caps the threads it asks for with `usable_cpus()`: an intra-op pool with
more threads than CPUs makes every operator wait for a thread that is not running.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (os.cpu_count() where the OS has no such mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _read_quota(directory: Path, v2: bool) -> float | None:
    """CPUs granted by one cgroup directory's quota file(s); None when unlimited or unreadable."""
    try:
        if v2:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            if quota == "max":
                return None
        else:
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
        q, p = int(quota), int(period)
    except (OSError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None


def _quota_along(top: Path, path: str, v2: bool) -> float | None:
    """Smallest quota of the cgroup at `path` under `top` and of its ancestors up to `top`."""
    quotas = []
    directory = top / path.strip("/") if path.strip("/") else top
    while True:
        q = _read_quota(directory, v2)
        if q is not None:
            quotas.append(q)
        if directory == top or top not in directory.parents:
            break
        directory = directory.parent
    return min(quotas, default=None)


def cgroup_cpu_limit(cgroup_text: str | None = None, root: str | Path = CGROUP_ROOT) -> float | None:
    """CPUs (quota / period, may be fractional) that this process's cgroups allow; None if unlimited.

    `cgroup_text` is /proc/self/cgroup (read when None); `root` is where the cgroup file systems
    are mounted. Both cgroup v2 (`0::/path`, cpu.max) and v1 (`N:cpu,cpuacct:/path`) are read; a
    container with its own cgroup namespace sees its limit at the root of the mount.
    """
    root = Path(root)
    if cgroup_text is None:
        try:
            cgroup_text = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    limits = []
    for line in cgroup_text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            top, v2 = (root / "unified" if (root / "unified" / "cgroup.controllers").exists() else root), True
        elif "cpu" in controllers.split(","):
            top = root / controllers if (root / controllers).is_dir() else root / "cpu"
            v2 = False
        else:
            continue
        q = _quota_along(top, path, v2)
        if q is not None:
            limits.append(q)
    return min(limits, default=None)


def usable_cpus() -> int:
    """CPUs this process may keep busy: its affinity, capped by its cgroup quota (rounded down, >= 1)."""
    cpus = affinity_cpus()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return cpus
