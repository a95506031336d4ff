"""The ranks of one node load each dataset once and share its rows (torchrun: LOCAL_WORLD_SIZE > 1).

Every rank used to parse and check every dataset itself: 8 GPUs on a node made 8x the storage round
trips (a stat and a signature read per image; ~1 ms each on network storage, Incidents1M has ~1M rows)
and held 8 copies of the table (~300 MiB each at 1M rows). Now, at the start of each stage (`share`,
called by every rank with the same dataset names):

1. the node's local rank 0 loads and checks each dataset (its summary lines are the only ones), writes
   the train and held-out tables as plain .npy files into a fresh folder of the node's temp directory
   (tempfile.gettempdir(): TMPDIR, /tmp), and maps them itself;
2. every rank waits for every node's local rank 0 (`DistContext.wait_gather`, WAIT_TIMEOUT) and gets
   each one's outcome: the folder, or the error, which then stops every rank with the same line;
3. the other ranks of the node memory-map the files (np.load mmap_mode="r"): the page cache holds the
   rows once for the node's ranks and their loader workers; a rank whose data settings differ from its
   local rank 0's (another --data-dir) or that cannot see the folder loads the data itself;
4. once every rank has mapped its tables (a second wait), local rank 0 deletes the folder: the mappings
   stay valid, nothing is left behind, and a later run can never read this run's files.

Per node, not one loader for the job: nodes need not share a file system, and the digest check at the
stage's start (trainer._check_same_data) still compares the nodes' copies of the data.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .common import DataError
from .table import SampleTable

if TYPE_CHECKING:
    from .build import Loaded, SourceCache

log = logging.getLogger("ember_training.data")

PREFIX = "ember-data-"
"""Name prefix of the node's shared-table folders in the temp directory."""


def _one_line(e: BaseException) -> str:
    text = str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"
    return " ".join(text.split())


def _write(folder: Path, loaded: Loaded) -> None:
    train, val, summary = loaded
    train.save(folder / "train")
    val.save(folder / "val")
    (folder / "summary.json").write_text(json.dumps(summary))


def _read(folder: Path) -> Loaded:
    summary = json.loads((folder / "summary.json").read_text())
    return SampleTable.load(folder / "train"), SampleTable.load(folder / "val"), summary


def _publish(cache: SourceCache, names: list[str]) -> dict:
    """Local rank 0: load, write and map each dataset not yet shared; what the other ranks need to know."""
    todo = [n for n in names if not cache.loaded(n) or not cache.loaded(n)[0].mapped]
    if not todo:
        return {"folder": None, "error": None}
    try:
        loaded = {name: cache.load(name) for name in todo}
    except Exception as e:  # noqa: BLE001 - every rank stops with it (the others raise it as a DataError)
        return {"folder": None, "error": _one_line(e), "exc": e}
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix=PREFIX))
        token = uuid.uuid4().hex
        for name in todo:
            _write(folder / name, loaded[name])
            cache.put(name, _read(folder / name))  # its own copy goes too: one per node
        (folder / "token").write_text(token)
    except OSError as e:  # a full or read-only temp dir: no sharing, each rank loads for itself (as before)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        log.warning("cannot share the loaded data with this node's other ranks (%s: %s): each loads it itself",
                    tempfile.gettempdir(), _one_line(e))
        return {"folder": None, "error": None}
    return {"folder": str(folder), "token": token, "keys": {n: cache.key(n) for n in todo}, "error": None}


def _raise_first(outcomes: list[dict], own: dict) -> None:
    """Stop on the first rank's error (the rank that had it raises its own exception)."""
    failed = [o for o in outcomes if o["error"]]
    if not failed:
        return
    if own.get("exc") is not None:
        raise own["exc"]
    raise DataError(failed[0]["error"])


def _map(cache: SourceCache, names: list[str], mine: dict) -> None:
    """A rank other than local rank 0: map the tables it wrote, or load what it could not share."""
    folder = Path(mine["folder"]) if mine["folder"] else None
    usable = folder is not None and (folder / "token").is_file() and (folder / "token").read_text() == mine["token"]
    for name in names:
        if cache.loaded(name):
            continue
        if usable and mine["keys"].get(name) == cache.key(name):
            cache.put(name, _read(folder / name))
            continue
        why = "its data settings differ from local rank 0's" if usable else "local rank 0's tables are not visible here"
        log.warning("%s: rank %d loads this dataset itself (%s)", name, cache.ctx.rank, why)
        cache.load(name)


def share(cache: SourceCache, names: list[str]) -> None:
    """Collective: every rank of the job, the same names in the same order (see the module's text)."""
    ctx = cache.ctx
    own = _publish(cache, names) if ctx.local_rank == 0 else {"folder": None, "error": None}
    outcomes = ctx.wait_gather({k: v for k, v in own.items() if k != "exc"})
    try:
        _raise_first(outcomes, own)
        error, exc = None, None
        if ctx.local_rank:
            try:
                _map(cache, names, outcomes[ctx.rank - ctx.local_rank])
            except Exception as e:  # noqa: BLE001 - a rank that loads for itself: every rank stops with it
                error, exc = _one_line(e), e
        _raise_first(ctx.wait_gather({"error": error}), {"exc": exc})
    finally:
        if own["folder"]:
            shutil.rmtree(own["folder"], ignore_errors=True)
