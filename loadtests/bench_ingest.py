"""Bulk ingestion through the Python client: N precomputed vectors upserted into a flat collection of a
fresh local `jepa-serve`, with the write-ahead log fsynced before each acknowledgement and without.

    .venv/bin/python -m loadtests.bench_ingest --points 1000000 --dim 384

Prints one markdown row per run (for docs/collections.md): points, dim, fsync, requests, seconds, points/s.
The vectors are random (ingestion cost does not depend on their values); ids are "p<i>".
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from jepa_serve_client import Client

from loadtests.server import LocalServer, model_repository


def ingest(url: str, points: int, dim: int, batch: int) -> tuple[int, float]:
    """Upsert `points` vectors, generated `batch` at a time (the client splits each call by the server's limits)."""
    rng = np.random.default_rng(0)
    requests = 0
    with Client(url, timeout_s=600) as client:
        client.create_collection("ingest", dim=dim, index="flat")
        started = time.perf_counter()
        for start in range(0, points, batch):
            stop = min(points, start + batch)
            vectors = rng.standard_normal((stop - start, dim), dtype=np.float32)
            done = client.upsert("ingest", [f"p{i}" for i in range(start, stop)], vectors)
            requests += done.requests
        elapsed = time.perf_counter() - started
        count = client.get_collection("ingest").count
    if count != points:
        raise RuntimeError(f"stored {count} points, sent {points}")
    return requests, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=50_000, help="vectors per client.upsert call")
    parser.add_argument("--fsync", choices=["both", "on", "off"], default="both")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        repository = model_repository(None, Path(scratch), print)
        for fsync in ([True, False] if args.fsync == "both" else [args.fsync == "on"]):
            server = LocalServer(repository, Path(scratch) / f"fsync-{fsync}",
                                 {"JEPA_FSYNC": str(fsync).lower(), "JEPA_WARMUP": "false"})
            server.start()
            try:
                requests, seconds = ingest(server.url, args.points, args.dim, args.batch)
            finally:
                server.stop()
            rows.append(f"| {args.points:,} | {args.dim} | {'on' if fsync else 'off'} | {requests:,} | "
                        f"{seconds:.1f} | {args.points / seconds:,.0f} |")
    print(f"# {datetime.date.today()} · {platform.node()} · {platform.processor() or platform.machine()} · "
          f"python -m loadtests.bench_ingest --points {args.points} --dim {args.dim}")
    print("| points | dim | fsync | requests | seconds | points/s |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
