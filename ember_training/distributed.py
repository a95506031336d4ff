"""DDP context: started by torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) or a single process.

Two kinds of waiting: the training collectives (DDP's gradient all-reduce, `mean`, `gather`) run
in lockstep under the process group's timeout (torch's default: 10 min with NCCL, 30 min with
gloo; EMBER_DIST_TIMEOUT_S sets it), while `barrier` waits for work only rank 0 does (generated
data, the tokenizer, checkpoint writes, evaluation, the robot-selection recipe) on a separate gloo
group with a timeout of WAIT_TIMEOUT, so that work may take longer than the collective timeout;
`wait_gather` is such a wait that also hands every rank each rank's outcome (the data each node's
local rank 0 loads for the other ranks of its node, or its error: data/shared.py). `max_int`, the
trainer's per-step stop check (stop_signals.py), runs on that gloo group too: a CPU int, no CUDA sync.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

TIMEOUT_ENV = "EMBER_DIST_TIMEOUT_S"
"""Environment variable: the training collectives' timeout in seconds (unset: torch's default)."""
WAIT_TIMEOUT = timedelta(hours=24)
"""How long the other ranks wait in `barrier` for rank 0 (a crashed rank ends the job sooner:
torchrun stops every rank when one exits with an error)."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    wait_group: Any = None  # the gloo group of `barrier` (None: the default group)
    local_world_size: int = 1
    """ranks on this node (torchrun's LOCAL_WORLD_SIZE; 1 when a launcher does not say: no sharing)"""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait until every rank gets here (for rank 0's own work: up to WAIT_TIMEOUT)."""
        if self.enabled:
            dist.barrier(group=self.wait_group)

    def wait_gather(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order, once every rank gets here (like `barrier`: up to WAIT_TIMEOUT)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.wait_group)
        return out

    def max_int(self, value: int) -> int:
        """The largest of every rank's `value` (the trainer's per-step stop check: a stop signal's
        number or 0). One all-reduce of one CPU int on the gloo wait group, so no CUDA work or sync;
        a single process does no collective."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.wait_group)
        return int(t.item())

    def mean(self, value: float) -> float:
        """Average of a float over ranks."""
        return self.mean_dict({"v": value})["v"]

    def mean_dict(self, values: dict[str, float]) -> dict[str, float]:
        """Average of each float over ranks (one all-reduce; every rank passes the same keys)."""
        if not self.enabled:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order (all ranks get the list)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def odd_ranks(values: list[Any]) -> list[int]:
    """Ranks (indices of `values`) whose value differs from the one most ranks hold (rank 0's on a tie)."""
    counts = [values.count(v) for v in values]
    reference = values[max(range(len(values)), key=lambda r: (counts[r], -r))]
    return [r for r, v in enumerate(values) if v != reference]


def collective_timeout() -> timedelta | None:
    """The timeout EMBER_DIST_TIMEOUT_S asks for (None: torch's default)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return timedelta(seconds=seconds)


def init_distributed() -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1; pick cuda:LOCAL_RANK or the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    wait_group = None
    if world > 1:
        timeout = collective_timeout()
        if not dist.is_initialized():
            kwargs = {"timeout": timeout} if timeout is not None else {}
            dist.init_process_group(backend="nccl" if cuda else "gloo", **kwargs)
        wait_group = dist.new_group(backend="gloo", timeout=max(WAIT_TIMEOUT, timeout or WAIT_TIMEOUT))
    return DistContext(rank, world, local, device, wait_group, local_world if world > 1 else 1)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
