"""The ranks of one node load the data once (2 gloo processes on the CPU as torchrun starts them on one
node: LOCAL_RANK 0-1, LOCAL_WORLD_SIZE 2): local rank 0 loads and checks each dataset, the other rank
memory-maps its table; both train on the same rows, and a load that fails stops both with its error."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from .training_helpers import free_port, quick_overrides, stage1_epoch, write_config

JOIN_TIMEOUT_S = 90  # a hung collective fails the test instead of blocking the suite
BATCH = 4


class _Lines(logging.Handler):
    """The data loaders' summary lines ('coco: 5 samples from 7 rows, ...'): one per dataset a rank loads."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if " samples from " in record.getMessage():
            self.lines.append(record.getMessage())


def _rank_main(rank: int, port: int, cfg_path: str, out: str, data_dirs: list[str], node_tmp: str, result: str) -> None:
    """One rank of a one-node torchrun job: set up stage 1 as ember-train does and read one epoch."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(len(data_dirs)), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(len(data_dirs)), "CUDA_VISIBLE_DEVICES": "", "TMPDIR": node_tmp})
    tempfile.tempdir = None  # TMPDIR is read again
    from ember_training.config import load_config
    from ember_training.distributed import init_distributed, shutdown_distributed
    from ember_training.trainer import Trainer

    lines = _Lines()
    data_log = logging.getLogger("ember_training.data")
    data_log.addHandler(lines)
    data_log.setLevel(logging.INFO)
    ctx = init_distributed()
    try:
        run, draws = stage1_epoch(Trainer(load_config(cfg_path), out, data_dirs[rank], ctx=ctx))
        body = {"draws": draws, "digest": run.data["digest"], "lines": lines.lines,
                "mapped": run.dataset.samples.mapped}
    except Exception as e:  # noqa: BLE001 - the test compares every rank's error
        body = {"error": f"{type(e).__name__}: {e}", "lines": lines.lines}
    finally:
        shutdown_distributed()
    Path(result, f"rank{rank}.json").write_text(json.dumps(body))


@pytest.fixture
def node_tmp() -> Iterator[Path]:
    """The node's temp folder (TMPDIR of the ranks): a short path, loader workers put sockets there."""
    path = Path(tempfile.mkdtemp(prefix="node"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _node(cfg: Path, out: Path, data_dirs: list[Path], node_tmp: Path, result: Path) -> list[dict]:
    """_rank_main on len(data_dirs) spawned processes of one node; each rank's result."""
    result.mkdir(parents=True, exist_ok=True)
    spawn = mp.get_context("spawn")
    port = free_port()
    procs = [spawn.Process(target=_rank_main, args=(r, port, str(cfg), str(out), [str(d) for d in data_dirs],
                                                     str(node_tmp), str(result)))
             for r in range(len(data_dirs))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"rank(s) {hung} hung for {JOIN_TIMEOUT_S} s"
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return [json.loads((result / f"rank{r}.json").read_text()) for r in range(len(data_dirs))]


def _config(tmp_path: Path) -> Path:
    # stage 1 reads coco and flickr30k (two tables joined), some rows held out, augmentation, 2 workers a rank
    return write_config(tmp_path / "c.yaml", {
        **quick_overrides(steps=2, batch=BATCH), "stages.alignment.datasets": ["coco", "flickr30k"],
        "data.val_fraction": 0.2, "data.max_samples_per_dataset": 8, "data.num_workers": 2, "data.augment": True,
        "tracking.codecarbon": False, "tracking.plots": False})


def test_ddp_ranks_of_a_node_load_the_data_once(synth_dir: Path, tmp_path: Path, node_tmp: Path) -> None:
    """Every rank used to parse and check every dataset itself (8 GPUs: 8x the image stats and signature reads
    on network storage, 8 copies of the table). Now local rank 0 alone loads (its summary lines are the only
    ones), rank 1 maps the table local rank 0 wrote, both train on the rows and augmentation draws a single
    process has, with the same data digest, and the node's temp folder is left empty."""
    cfg = _config(tmp_path)
    ranks = _node(cfg, tmp_path / "out", [synth_dir, synth_dir], node_tmp, tmp_path / "result")
    assert all("error" not in r for r in ranks), ranks
    loaded = [sorted(line.split(":")[0] for line in r["lines"]) for r in ranks]
    assert "coco" in loaded[0] and "flickr30k" in loaded[0] and len(set(loaded[0])) == len(loaded[0]), loaded[0]
    assert loaded[1] == [], f"rank 1 loaded and checked data itself: {ranks[1]['lines']}"
    assert ranks[1]["mapped"], "rank 1 holds its own copy of the table"
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert not list(node_tmp.glob("ember-data*")), "the shared table's files were left behind"

    from ember_training.config import load_config
    from ember_training.data.sampler import ResumableSampler
    from ember_training.trainer import Trainer

    single = Trainer(load_config(cfg), tmp_path / "out", synth_dir)  # one process, the same data
    single.prepare()
    dataset = single._loader("alignment", BATCH)[0]
    dataset.set_epoch(0)
    assert dataset.digest() == ranks[0]["digest"]
    for rank, got in enumerate(ranks):
        sampler = ResumableSampler(dataset, 2, rank, single.cfg.train.seed, BATCH)
        sampler.set_epoch(0)
        want = [(dataset[i]["uid"], hashlib.sha1(dataset[i]["pixel_values"].numpy().tobytes()).hexdigest())
                for i in sampler]
        assert [tuple(d) for d in got["draws"]] == want[: len(want) // BATCH * BATCH]


def test_ddp_failed_load_on_the_loading_rank_stops_every_rank(synth_dir: Path, tmp_path: Path,
                                                               node_tmp: Path) -> None:
    """Local rank 0 cannot read a dataset (here its copy of the COCO captions is cut off): rank 1 must not
    wait for a table that never comes, nor train alone; both stop with rank 0's one-line error."""
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    from ember_training.config import load_config
    from ember_training.trainer import Trainer

    Trainer(load_config(cfg), out, synth_dir).prepare()  # the run's tokenizer: no loading in prepare
    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    ann = bad / "coco/annotations/captions_train2017.json"
    ann.write_text(ann.read_text()[:200])
    ranks = _node(cfg, out, [bad, synth_dir], node_tmp, tmp_path / "result")
    for r, body in enumerate(ranks):
        assert "draws" not in body, f"rank {r} trained"
        assert "coco" in body["error"] and "not valid JSON" in body["error"], (r, body["error"])
        assert "\n" not in body["error"]
    assert not list(node_tmp.glob("ember-data*"))


def test_mapped_tables_give_the_rows_and_digest_of_the_loaded_samples(synth_dir: Path, shared_data: Path,
                                                                      tmp_path: Path) -> None:
    """What the other ranks of a node train on: tables written by `save` and memory-mapped by `load` (two of
    them joined without a copy, as a stage's datasets are) give every row of the loaded Samples, and the data
    digest checkpoints recorded before (the formula over Sample objects), also for an empty pool."""
    from ember_training.data.dataset import ImageSpec, StageDataset
    from ember_training.data.table import JoinedTable, SampleTable

    from .test_data_scale import _loaded, _old_digest, _same

    samples = _loaded(synth_dir, shared_data)
    table = SampleTable.of(samples)
    half = len(samples) // 2
    table.take(np.arange(half)).save(tmp_path / "a")
    table.take(np.arange(half, len(samples))).save(tmp_path / "b")
    SampleTable.of([]).save(tmp_path / "empty")
    parts = [SampleTable.load(tmp_path / name) for name in ("a", "b")]
    assert all(p.mapped for p in parts) and not table.mapped
    joined = SampleTable.concat(parts)
    assert isinstance(joined, JoinedTable) and len(joined) == len(samples)
    for a, b in zip(samples, joined, strict=True):
        _same(a, b)
    assert np.array_equal(joined.text_only(), table.text_only())
    pool = [s for s in samples if s.source == "incidents"]
    spec = ImageSpec(32, [0.5] * 3, [0.25] * 3, False)
    ds = StageDataset(joined, None, spec, 32, 48, 3, pool=pool)
    assert ds.digest() == _old_digest(samples, pool)
    no_pool = StageDataset(joined.take([i for i, s in enumerate(samples) if s.image is not None]), None, spec, 32, 48,
                           3, pool=SampleTable.load(tmp_path / "empty"))
    assert no_pool.digest() == _old_digest([s for s in samples if s.image is not None], [])
