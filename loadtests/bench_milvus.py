"""Milvus rows of the index benchmark: the same hard set, through the service's milvus backend on milvus-lite.

    python -m loadtests.bench_milvus --size 100000   # rewrites only the Milvus section of docs/bench/index.md

Each configuration gets a fresh embedded engine (a `.db` folder in a temporary directory) in this process,
written through `MilvusCollectionStore.upsert` (the code POST .../points runs) and searched through
`MilvusCollection.search` (the code /search runs): every call crosses milvus-lite's gRPC server, in threads
of this same process. `make bench-index` runs this after the FAISS rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from loadtests.bench_index import K, ROOT, Truth, hard_set
from service.index.collection import CollectionConfig
from loadtests.milvus_lite_probe import indexed_rows
from service.index.milvus_store import MilvusCollectionStore, milvus_name

BEGIN, END = "<!-- milvus rows: begin -->", "<!-- milvus rows: end -->"

CONFIGS: list[tuple[str, dict, list[dict]]] = [
    ("flat", {}, [{}]),
    ("hnsw", {"M": 16, "ef_construction": 100}, [{"ef": ef} for ef in (32, 64, 128)]),
    ("ivf_flat", {"nlist": 1024}, [{"nprobe": p} for p in (16, 64)]),
]


def measure(store: MilvusCollectionStore, queries: np.ndarray, truth: Truth, params: dict, singles: int) -> tuple[float, float, float]:
    collection = store.get("bench")
    for q in range(50):  # warm (and let the engine finish its post-flush compaction)
        collection.search(queries[q : q + 1], K, params=params)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        hits = collection.search(queries, K, params=params)
        best = min(best, time.perf_counter() - start)
    start = time.perf_counter()
    for q in range(singles):
        collection.search(queries[q : q + 1], K, params=params)
    single = singles / (time.perf_counter() - start)
    return truth.recall([[h.id for h in row] for row in hits]), len(queries) / best, single


def run(n: int, n_queries: int, singles: int, log) -> list[dict]:
    data, queries = hard_set(n, n_queries)
    truth = Truth.exact(data, queries)
    rows = []
    for kind, build, sweep in CONFIGS:
        work = Path(tempfile.mkdtemp(prefix="bench-milvus-"))
        # An upsert that fills the engine's buffer flushes it inline: seconds on a busy machine, past the service's 10 s.
        store = MilvusCollectionStore(str(work / "milvus.db"), timeout_s=600)
        try:
            store.recover()
            store.create(CollectionConfig(name="bench", dim=data.shape[1], index=kind, params=build))
            start = time.perf_counter()
            for lo in range(0, n, 10_000):
                hi = min(n, lo + 10_000)
                store.upsert("bench", [str(i) for i in range(lo, hi)], data[lo:hi], [{} for _ in range(lo, hi)])
            ingest = time.perf_counter() - start
            start = time.perf_counter()
            store.flush("bench")  # seal + build the index, as the engine does by itself as data grows
            indexed = indexed_rows(store.uri, milvus_name(store.prefix, "bench"))  # its background build, done
            build_s = time.perf_counter() - start
            log(f"  milvus {kind} {build}: ingest {ingest:.0f} s ({n / ingest:,.0f} points/s), "
                f"seal + index {build_s:.0f} s, rows under an index: {indexed}")
            for params in sweep:
                recall, batched, single = measure(store, queries, truth, params, singles)
                rows.append({"kind": kind, "build": build, "search": params, "recall": recall, "batched": batched,
                             "single": single, "ingest_s": ingest, "index_s": build_s, "indexed": indexed})
                log(f"    {params}: recall@10 {recall:.3f}  batched {batched:,.0f} q/s  single {single:,.0f} q/s")
        finally:
            store.close()
            shutil.rmtree(work, ignore_errors=True)
    return rows


def section(rows: list[dict], n: int, n_queries: int, singles: int, seconds: float, load_start, load_end) -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("pymilvus", "milvus-lite"))
    lines = [
        BEGIN,
        "## Milvus backend (embedded milvus-lite)",
        "",
        f"Produced by `python -m loadtests.bench_milvus --size {n}` (also the last step of `make bench-index`) on "
        f"{dt.date.today().isoformat()}: {os.cpu_count()}-core x86_64 CPU shared with other sessions, no GPU, {versions}, "
        f"Python {platform.python_version()}; {seconds:.0f} s in all. Load average (1/5/15 min) at the start: "
        f"{load_start[0]:.1f} / {load_start[1]:.1f} / {load_start[2]:.1f}, at the end: {load_end[0]:.1f} / {load_end[1]:.1f} / "
        f"{load_end[2]:.1f}.",
        "",
        f"The hard set above ({n:,} points, dim 384, the same seed and the same {n_queries} queries), written through the "
        "milvus backend (`MilvusCollectionStore.upsert`, Strong consistency) into a fresh embedded engine per row and "
        "searched through `MilvusCollection.search` (the code `/search` runs). Ingest = all upserts (acknowledged, in the "
        "engine's WAL); index = sealing the buffered rows and waiting for milvus-lite's background index build "
        "(`flush`, then `loadtests/milvus_lite_probe.py`: every row under the index before any search). Batched = the 1000 queries in "
        f"one search call (best of 2); single = {singles} sequential one-query calls.",
        "",
        "| kind | build params | search params | recall@10 | batched q/s | single q/s | ingest s | index s | rows under the index |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | `{json.dumps(r['build'])}` | `{json.dumps(r['search'])}` | {r['recall']:.3f} | "
                     f"{r['batched']:,.0f} | {r['single']:,.0f} | {r['ingest_s']:.0f} | {r['index_s']:.0f} | "
                     + ", ".join(f"{n:,} ({kind})" for kind, n in r["indexed"].items()) + " |")
    flat = next((r for r in rows if r["kind"] == "flat"), None)
    lines += [
        "",
        "**Where the embedded engine is slower, and why.** Compare with the FAISS rows above (same points, same queries). "
        "milvus-lite 3.x is a pure-Python engine behind a gRPC server: every search call encodes the queries and the hits "
        "as protobuf and, before any index is touched, walks every row of the collection in Python "
        "(`milvus_lite/search/executor_indexed.py`: a dict of the newest version of each primary key across segments, "
        "then a per-row loop for the valid-row mask, then an `IDSelectorBatch` over the valid rows for FAISS). That is "
        "work proportional to the collection on every call, whatever the index: it caps single-query throughput"
        + (f" (flat: {flat['single']:,.0f} q/s here)" if flat else "") + " and is why single-query rows here are one to two "
        "orders of magnitude below the in-process FAISS ones, while batched rows, where one call amortises it over 1000 "
        "queries, come within a few times of them (the FAISS rows were measured on another day at a lower load). Ingest is bounded the same way (Python row conversion on both sides of gRPC, a WAL write, "
        "and an inline seal of the buffer when it fills). None of this is Milvus's server design (C++ segments and "
        "indexes, queries fanned out to query nodes): these rows measure the embedded engine for development and single-node "
        "use, not a Milvus cluster, which this machine cannot run.",
        "",
        END,
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the Milvus section of the report (or append it), leaving the FAISS rows as they were measured."""
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "index.md")
    args = parser.parse_args()
    started, load_start = time.perf_counter(), os.getloadavg()
    rows = run(args.size, args.queries, args.singles, lambda msg: print(msg, flush=True))
    write_section(args.out, section(rows, args.size, args.queries, args.singles, time.perf_counter() - started,
                                    load_start, os.getloadavg()))
    print(f"wrote the Milvus section of {args.out}")


if __name__ == "__main__":
    main()
