"""Data loading at the scale of the real datasets: start-up time and loader-worker memory.

    python bench/data_scale.py [--sizes 10000,50000,200000] [--memory-rows 200000,1000000]
        [--worker-samples 4000] [--latency-ms 0.5] [--rank-rows 200000] [--tmp DIR] [--json PATH]
        [--sections startup,memory,workers,ranks]

Generated data in the Incidents1M format (`{"<class>/<hash>.jpg": {"incidents": ..., "places": ...,
"url": ...}}`): a few thousand tiny JPEGs, hard-linked under as many names as there are rows, so the
disk holds directory entries, not images.

1. Start-up per size (rows): JSON parse, the per-row checks (labels, duplicates), the per-image checks
   (a stat and a signature read per file), the compact table, the data digest each checkpoint records,
   and the tokenizer corpus (every prompt and target), each as ms per 1k rows; the ratio of the largest
   size's to the smallest's per-1k-rows cost shows whether start-up grows linearly. The image checks are
   timed on this disk (page cache warm) serially (as before) and on the thread pool
   (ember_training.data.images.CHECK_THREADS), and under a model of network storage: every check waits
   `--latency-ms` (an NFS or bucket-mount round trip) before it runs; serial vs pool is the speed-up a
   user on such storage gets.
2. Memory: bytes per row of the loaded samples as a list of Sample objects (before) and as a
   SampleTable (now), at `--memory-rows` rows; and the copy-on-read of DataLoader workers: a
   StageDataset of the largest size read by 2 workers for `--worker-samples` samples, each worker's
   private memory (USS = Private_Clean + Private_Dirty of /proc/PID/smaps_rollup) and PSS sampled as it
   goes, for the per-row objects of before and the table of now, in the same run.
3. Ranks of one node (`--rank-rows`): local rank 0 (this process) loads the incidents file and holds its
   table; a second rank (a fresh process) either loads and checks the same file itself (before) or
   memory-maps the table local rank 0 wrote (now, data/shared.py; local rank 0 maps it too), then reads
   every row once (the digest). Its time to get the rows and its RSS, PSS and USS growth, and the ratios.

Prints a table, writes JSON (default bench/results/data_scale.json) and a plot beside it. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _report import machine, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "data_scale.json"
UNIQUE_IMAGES = 2000
SECTIONS = ("startup", "memory", "workers", "ranks")
MIB = 2**20
LABELS = {"row_checks": "labels, Samples (GC paused)", "image_checks_pool": "image checks (pool)",
          "json_parse": "JSON parse (GC paused)"}


def make_data(root: Path, rows: int) -> None:
    """UNIQUE_IMAGES tiny JPEGs hard-linked under `rows` names, and one labels file per size later."""
    import cv2

    from ember.labels import INCIDENT_LABELS

    src = root / "unique"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for u in range(UNIQUE_IMAGES):
        cv2.imwrite(str(src / f"{u}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    for cls in INCIDENT_LABELS:
        (root / "images" / cls.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
    for i in range(rows):
        os.link(src / f"{i % UNIQUE_IMAGES}.jpg", root / "images" / _name(i))


def _name(i: int) -> str:
    from ember.labels import INCIDENT_LABELS

    return f"{INCIDENT_LABELS[i % len(INCIDENT_LABELS)].replace(' ', '_')}/{i * 2654435761 % 2**32:08x}{i:07d}.jpg"


def labels_file(root: Path, rows: int) -> Path:
    from ember.labels import INCIDENT_LABELS, PLACE_LABELS

    path = root / f"labels_{rows}.json"
    ann = {_name(i): {"incidents": {INCIDENT_LABELS[i % 43]: 1, INCIDENT_LABELS[(7 * i + 1) % 43]: 0},
                      "places": {PLACE_LABELS[i % 49]: 1}, "url": f"http://example.com/{i}.jpg"} for i in range(rows)}
    path.write_text(json.dumps(ann))
    return path


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t) * 1000


def startup(root: Path, rows: int, latency_s: float) -> dict:
    """ms of each start-up piece for one labels file of `rows` rows."""
    from ember.prompting import format_prompt
    from ember_training.data.common import LoadReport, _keyed_rows, gc_paused, read_json
    from ember_training.data.dataset import ImageSpec, StageDataset
    from ember_training.data.images import CHECK_THREADS, ImageLookup, find_image
    from ember_training.data.incidents import _rows, load_incidents
    from ember_training.data.table import SampleTable
    from ember_training.tokenizer import build_tokenizer

    path, images = labels_file(root, rows), root / "images"
    ms: dict[str, float] = {}
    text = path.read_text()
    gc.collect()
    _, ms["json_parse_gc_on"] = _timed(lambda: json.loads(text, object_pairs_hook=_keyed_rows))  # the parse before
    data, ms["json_parse"] = _timed(lambda: read_json(path, "incidents", keyed_rows=True))
    names = [k for k, _ in data.pairs]
    rep = LoadReport("bench")
    _, ms["duplicate_check"] = _timed(lambda: [rep.duplicate(p) for p in data.pairs])
    _, ms["image_checks_serial"] = _timed(lambda: [find_image(images, n) for n in names])

    def pooled(threads: int, lookup=None) -> None:
        with ImageLookup(images, names, threads=threads, lookup=lookup) as look:
            for n in names:
                look(n)

    _, ms["image_checks_pool"] = _timed(lambda: pooled(CHECK_THREADS))
    (samples, _), ms["load_serial_total"] = _timed(lambda: _load_serial(path, images))
    with gc_paused():  # as SourceCache loads a dataset
        (samples, _), ms["load_total"] = _timed(lambda: load_incidents(path, images))
    with gc_paused():  # the loader's loop with no file system: labels, duplicates, Samples
        _, loop = _timed(lambda: _rows(data.pairs, lambda n: (images / n, None), LoadReport("bench"), [], None))
    ms["row_checks"] = max(0.0, loop - ms["duplicate_check"])
    table, ms["table_build"] = _timed(lambda: SampleTable.of(samples))
    ds = StageDataset(table, None, ImageSpec(16, [0.5] * 3, [0.25] * 3, False), 16, 16, 0)
    _, ms["data_digest"] = _timed(ds.digest)  # from the table's columns
    _, ms["data_digest_samples"] = _timed(lambda: _digest_samples(table))
    texts, ms["tokenizer_corpus"] = _timed(lambda: [format_prompt(s.task) + s.target for s in table])
    _, ms["tokenizer_bpe_train"] = _timed(lambda: build_tokenizer({"kind": "bpe", "vocab_size": 512}, texts))
    out = {"rows": rows, "ms": {k: round(v, 1) for k, v in ms.items()}, "check_threads": CHECK_THREADS}
    if latency_s:  # network storage model: each check waits one round trip first (sleep releases the GIL)
        sub = names[: max(500, min(len(names), int(2.0 / latency_s)))]

        def slow(name: str):
            time.sleep(latency_s)
            return find_image(images, name)

        _, serial = _timed(lambda: [slow(n) for n in sub])
        _, pool = _timed(lambda: _pooled_names(images, sub, CHECK_THREADS, slow))
        _, pool32 = _timed(lambda: _pooled_names(images, sub, 32, slow))
        out["network_model"] = {"latency_ms": latency_s * 1000, "names": len(sub), "serial_ms": round(serial, 1),
                                "pool_ms": round(pool, 1), "pool32_ms": round(pool32, 1),
                                "speedup_pool": round(serial / pool, 2), "speedup_pool32": round(serial / pool32, 2)}
    return out


def _digest_samples(table) -> str:
    """The data digest as computed before: over a Sample built per row (the same bytes)."""
    import hashlib

    from ember_training.data.table import digest_rows

    h = hashlib.sha256()
    for row in digest_rows(s for s in table):  # one Sample at a time, as before
        h.update(row)
    return h.hexdigest()


def _pooled_names(images: Path, names: list[str], threads: int, lookup) -> None:
    from ember_training.data.images import ImageLookup

    with ImageLookup(images, names, threads=threads, lookup=lookup) as look:
        for n in names:
            look(n)


def _load_serial(path: Path, images: Path):
    """load_incidents with one check at a time (the loader before the thread pool)."""
    from ember_training.data import images as images_mod
    from ember_training.data.incidents import load_incidents

    saved, images_mod.CHECK_THREADS = images_mod.CHECK_THREADS, 1
    try:  # the GC on, as before
        return load_incidents(path, images)
    finally:
        images_mod.CHECK_THREADS = saved


def synthetic_samples(rows: int, root: Path | None = None) -> list:
    """`rows` incident Samples as the loader makes them (image paths under `root`, or made up)."""
    from ember.labels import NUM_INCIDENTS, NUM_PLACES
    from ember.prompting import DEFAULT_TASK
    from ember_training.data.common import Sample, label_vector

    base = str(root / "images") if root else "/data/incidents/images"
    out = []
    for i in range(rows):
        inc, plc = label_vector(NUM_INCIDENTS), label_vector(NUM_PLACES)
        inc[i % 43], inc[(7 * i + 1) % 43], plc[i % 49] = 1, 0, 1
        out.append(Sample(uid=f"incidents/{_name(i)}", source="incidents", image=f"{base}/{_name(i)}",
                          task=DEFAULT_TASK, incidents=inc, places=plc))
    return out


def dataset_bytes(rows: int) -> dict:
    """tracemalloc bytes of the samples as a list of Sample objects and as a SampleTable."""
    from ember_training.data.table import SampleTable

    gc.collect()
    tracemalloc.start()
    samples = synthetic_samples(rows)
    as_list = tracemalloc.get_traced_memory()[0]
    table = SampleTable.of(samples)
    del samples
    gc.collect()
    as_table = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del table
    return {"rows": rows, "list_mib": round(as_list / MIB, 1), "table_mib": round(as_table / MIB, 1),
            "list_bytes_per_row": round(as_list / rows), "table_bytes_per_row": round(as_table / rows),
            "ratio_list_over_table": round(as_list / as_table, 2)}


def _smaps(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        kb = {line.split(":")[0]: int(line.split()[1]) for line in fh if line.endswith("kB\n")}
    return {"uss_mib": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, "pss_mib": kb["Pss"] / 1024}


def worker_memory(root: Path, rows: int, samples: int, compact: bool) -> dict:
    """Private memory of 2 loader workers while they read `samples` samples of a `rows`-row dataset."""
    import torch
    from torch.utils.data import DataLoader

    from ember_training.data.dataset import Collator, ImageSpec, StageDataset
    from ember_training.data.sampler import ResumableSampler
    from ember_training.tokenizer import build_tokenizer

    tok = build_tokenizer({"kind": "bpe", "vocab_size": 300}, ["Describe the incident and choose robots."] * 4)
    rows_list = synthetic_samples(rows, root)
    ds = StageDataset(rows_list, tok, ImageSpec(16, [0.5] * 3, [0.25] * 3, False), 16, 16, 0)
    if not compact:
        ds.samples = rows_list  # the representation before: one Sample object per row
    del rows_list
    gc.collect()
    batch = 32
    loader = DataLoader(ds, batch_size=batch, sampler=ResumableSampler(ds, 1, 0, 0), num_workers=2,
                        collate_fn=Collator(0), generator=torch.Generator(), prefetch_factor=2)
    it = iter(loader)
    next(it)
    pids = [w.pid for w in it._workers]
    trace = [{"samples": batch, **_mean([_smaps(p) for p in pids])}]
    every = max(1, samples // batch // 16)
    for k in range(2, samples // batch + 1):
        next(it)
        if k % every == 0:
            trace.append({"samples": k * batch, **_mean([_smaps(p) for p in pids])})
    del it
    return {"rows": rows, "representation": "table" if compact else "list", "trace": trace,
            "uss_growth_mib": round(trace[-1]["uss_mib"] - trace[0]["uss_mib"], 1),
            "pss_growth_mib": round(trace[-1]["pss_mib"] - trace[0]["pss_mib"], 1)}


def _second_rank(mode: str, path: str, images: str, folder: str, queue) -> None:
    """A second rank of the node (spawned): get the rows (load them itself, or map local rank 0's), read
    each row once, report ms and memory growth."""
    from ember_training.data.common import gc_paused
    from ember_training.data.incidents import load_incidents
    from ember_training.data.table import SampleTable

    before = _smaps(os.getpid()) | {"rss_mib": _rss(os.getpid())}
    t = time.perf_counter()
    if mode == "own":
        with gc_paused():
            samples, _ = load_incidents(Path(path), Path(images))
            table = SampleTable.of(samples)
            del samples
    else:
        table = SampleTable.load(Path(folder))
    ms = (time.perf_counter() - t) * 1000
    rows = sum(1 for _ in table.digest_rows())  # an epoch reads every row
    after = _smaps(os.getpid()) | {"rss_mib": _rss(os.getpid())}
    queue.put({"mode": mode, "rows": rows, "get_rows_ms": round(ms, 1),
               **{f"{k}_growth": round(after[k] - before[k], 1) for k in before}})


def _rss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def node_ranks(root: Path, rows: int) -> dict:
    """The second rank of a node with its own table (before) and with local rank 0's mapped table (now)."""
    import multiprocessing as mp

    from ember_training.data.common import gc_paused
    from ember_training.data.incidents import load_incidents
    from ember_training.data.table import SampleTable

    path, images = labels_file(root, rows), root / "images"
    with gc_paused():
        samples, _ = load_incidents(path, images)
        own = SampleTable.of(samples)
        del samples
    folder = root / f"shared_{rows}"
    _, save_ms = _timed(lambda: own.save(folder))
    out: dict = {"rows": rows, "table_mib": round(own.nbytes() / MIB, 1), "save_ms": round(save_ms, 1),
                 "image_checks_per_node": {"before": "ranks x rows", "now": "rows"}}
    spawn = mp.get_context("spawn")
    for mode in ("own", "shared"):
        held = own if mode == "own" else SampleTable.load(folder)  # local rank 0: its own table, or the mapped one
        sum(1 for _ in held.digest_rows())
        queue = spawn.Queue()
        proc = spawn.Process(target=_second_rank, args=(mode, str(path), str(images), str(folder), queue))
        proc.start()
        out[mode] = queue.get(timeout=600)
        proc.join()
        del held
    shutil.rmtree(folder, ignore_errors=True)
    a, b = out["own"], out["shared"]
    out["ratios"] = {"get_rows_own_over_shared": round(a["get_rows_ms"] / max(b["get_rows_ms"], 0.1), 1),
                     "pss_growth_own_over_shared": round(a["pss_mib_growth"] / max(b["pss_mib_growth"], 0.1), 1),
                     "uss_growth_own_over_shared": round(a["uss_mib_growth"] / max(b["uss_mib_growth"], 0.1), 1)}
    return out


def _mean(stats: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(sum(s[k] for s in stats) / len(stats), 1) for k in stats[0]}


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    parts = ["json_parse", "duplicate_check", "row_checks", "image_checks_pool", "table_build", "data_digest",
             "tokenizer_corpus"]
    xs = [s["rows"] for s in r["startup"]]
    bottom = np.zeros(len(xs))
    for p in parts:
        v = np.array([s["ms"][p] / s["rows"] * 1000 for s in r["startup"]])
        ax[0].bar([str(x) for x in xs], v, bottom=bottom, label=LABELS.get(p, p))
        bottom += v
    ax[0].set_ylabel("ms per 1k rows (start-up piece)")
    ax[0].set_xlabel("incident rows")
    ax[0].legend(fontsize=7)
    net = r["startup"][-1].get("network_model")
    if net:
        ax[1].bar(["serial (before)", f"pool {r['startup'][-1]['check_threads']}", "pool 32"],
                  [net["serial_ms"] / net["names"], net["pool_ms"] / net["names"], net["pool32_ms"] / net["names"]])
        ax[1].set_ylabel(f"ms per image check ({net['latency_ms']} ms round trip)")
        ax[1].set_title("network storage model", fontsize=9)
    for w in r["workers"]:
        ax[2].plot([t["samples"] for t in w["trace"]], [t["uss_mib"] for t in w["trace"]], "o-", ms=3,
                   label=f"{w['representation']}: worker USS")
    ax[2].set_xlabel("samples read (2 workers)")
    ax[2].set_ylabel("MiB private per worker")
    ax[2].legend(fontsize=8)
    fig.suptitle(f"data loading at scale ({r['machine']['cpus']} CPUs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,50000,200000")
    p.add_argument("--memory-rows", default="200000,1000000")
    p.add_argument("--worker-samples", type=int, default=4000)
    p.add_argument("--latency-ms", type=float, default=0.5)
    p.add_argument("--epoch-rows", type=int, default=20000, help="rows of the whole-epoch worker run (0: none)")
    p.add_argument("--rank-rows", type=int, default=200000, help="rows of the two-ranks-of-a-node run")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"which parts to run, of {','.join(SECTIONS)}")
    p.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: a new one in the system temp)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        p.error(f"--sections: unknown {sorted(sections - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    sizes = sorted(int(x) for x in args.sizes.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="ember-data-scale-", dir=args.tmp))
    r: dict = {}
    try:
        make_data(tmp, max(sizes[-1], args.rank_rows if "ranks" in sections else 0))
        if "startup" in sections:
            r["startup"] = [startup(tmp, n, args.latency_ms / 1000 if n == sizes[-1] else 0) for n in sizes]
        if "memory" in sections:
            r["memory"] = [dataset_bytes(int(n)) for n in args.memory_rows.split(",")]
        if "workers" in sections:
            r["workers"] = [worker_memory(tmp, sizes[-1], args.worker_samples, compact) for compact in (False, True)]
            if args.epoch_rows:  # a whole epoch: does each worker end up with a copy of all the rows?
                r["workers_epoch"] = [worker_memory(tmp, args.epoch_rows, args.epoch_rows, compact)
                                      for compact in (False, True)]
                r["workers_epoch_dataset_mib"] = dataset_bytes(args.epoch_rows)
        if "ranks" in sections:
            r["node_ranks"] = node_ranks(tmp, args.rank_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r["ratios"] = {}
    if "startup" in r:
        first, last = r["startup"][0], r["startup"][-1]
        r["ratios"]["per_1k_rows_largest_over_smallest"] = {
            k: round((last["ms"][k] / last["rows"]) / max(first["ms"][k] / first["rows"], 1e-9), 2) for k in last["ms"]}
        r["ratios"]["load_serial_over_pool_local"] = round(last["ms"]["load_serial_total"] / last["ms"]["load_total"], 2)
        r["ratios"]["digest_samples_over_columns"] = round(last["ms"]["data_digest_samples"] / last["ms"]["data_digest"], 2)
    if "workers" in r:
        r["ratios"]["worker_uss_growth_list_over_table"] = round(
            r["workers"][0]["uss_growth_mib"] / max(r["workers"][1]["uss_growth_mib"], 0.1), 1)
    r.update(machine())
    report(r)
    write_json(args.json, r)
    if "startup" in r and "workers" in r:
        plot(r, args.json.with_suffix(".png"))
        print(f"wrote {args.json.with_suffix('.png')}")
    return 0


def report(r: dict) -> None:
    """The printed table of each section that ran."""
    if "startup" in r:
        last = r["startup"][-1]
        print(f"{'rows':>8} " + " ".join(f"{k:>14}" for k in last["ms"]) + "   (ms per 1k rows)")
        for s in r["startup"]:
            print(f"{s['rows']:>8} " + " ".join(f"{v / s['rows'] * 1000:>14.1f}" for v in s["ms"].values()))
        print("largest/smallest per-1k-rows: " + ", ".join(
            f"{k} {v}x" for k, v in r["ratios"]["per_1k_rows_largest_over_smallest"].items()))
        print(f"data digest over Sample objects / over the columns: {r['ratios']['digest_samples_over_columns']}x")
        if net := last.get("network_model"):
            print(f"image checks with a {net['latency_ms']} ms round trip ({net['names']} names): serial "
                  f"{net['serial_ms']:.0f} ms, pool of {last['check_threads']} {net['pool_ms']:.0f} ms "
                  f"({net['speedup_pool']}x), pool of 32 {net['pool32_ms']:.0f} ms ({net['speedup_pool32']}x)")
    for m in r.get("memory", []):
        print(f"{m['rows']:>8} rows: list of Samples {m['list_mib']} MiB ({m['list_bytes_per_row']} B/row), table "
              f"{m['table_mib']} MiB ({m['table_bytes_per_row']} B/row): {m['ratio_list_over_table']}x")
    for w in r.get("workers", []):
        print(f"workers ({w['representation']}, {w['rows']} rows): USS {w['trace'][0]['uss_mib']} -> "
              f"{w['trace'][-1]['uss_mib']} MiB ({w['uss_growth_mib']:+}), PSS {w['pss_growth_mib']:+} MiB after "
              f"{w['trace'][-1]['samples']} samples")
    if "workers" in r:
        print(f"worker USS growth, list / table: {r['ratios']['worker_uss_growth_list_over_table']}x")
    if "workers_epoch" in r:
        size = r["workers_epoch_dataset_mib"]
        for w in r["workers_epoch"]:
            print(f"whole epoch ({w['rows']} rows, list {size['list_mib']} MiB, table {size['table_mib']} MiB): "
                  f"{w['representation']} worker USS {w['uss_growth_mib']:+} MiB, PSS {w['pss_growth_mib']:+} MiB")
    if n := r.get("node_ranks"):
        print(f"second rank of a node ({n['rows']} rows, table {n['table_mib']} MiB; local rank 0 writes it in "
              f"{n['save_ms']:.0f} ms):")
        for mode, what in (("own", "loads and checks itself (before)"), ("shared", "maps local rank 0's (now)")):
            m = n[mode]
            print(f"  {what}: rows in {m['get_rows_ms']:.0f} ms, RSS {m['rss_mib_growth']:+} MiB, PSS "
                  f"{m['pss_mib_growth']:+} MiB, USS {m['uss_mib_growth']:+} MiB")
        print("  own / shared: " + ", ".join(f"{k} {v}x" for k, v in n["ratios"].items()))


if __name__ == "__main__":
    sys.exit(main())
