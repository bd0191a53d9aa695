"""kill -9 a real server while a client streams upserts; every acknowledged write survives the restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.processes import Server
from tests.support.record import record

pytestmark = pytest.mark.e2e
DIM = 16


def stream_upserts(url: str, collection: str, acked: list[str], stop: threading.Event, prefix: str,
                   points: int = 4) -> None:
    """Upsert batches of `points` until the server dies; record the ids of every 200 answer."""
    rng = np.random.default_rng(0)
    batch = 0
    with httpx.Client(base_url=url, timeout=5) as http:
        while not stop.is_set():
            ids = [f"{prefix}{batch}-{i}" for i in range(points)]
            try:
                r = http.post(
                    f"/collections/{collection}/points",
                    json={
                        "ids": ids,
                        "vectors": rng.standard_normal((points, DIM)).tolist(),
                        "metadata": [{"b": batch}] * points,
                    },
                )
            except httpx.TransportError:
                return  # the server died mid-request: this batch was never acknowledged
            if r.status_code == 200:
                acked.extend(ids)  # list.extend is atomic: writer threads may share one list
            batch += 1


def assert_all_present(url: str, collection: str, acked: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        count = http.get(f"/collections/{collection}").json()["count"]
        assert count >= len(acked)
        missing = [i for i in acked if http.get(f"/collections/{collection}/points/{i}").status_code != 200]
    assert not missing, f"{len(missing)} acknowledged upserts lost, e.g. {missing[:5]}"


def crash_and_check(server: Server, collection: str, create: dict, rounds: int = 2) -> None:
    httpx.put(f"{server.url}/collections/{collection}", json=create, timeout=10).raise_for_status()
    acked: list[str] = []
    for round_ in range(rounds):
        stop = threading.Event()
        writer = threading.Thread(target=stream_upserts, args=(server.url, collection, acked, stop, f"r{round_}-"))
        writer.start()
        time.sleep(1.0 + 0.3 * round_)
        before = len(acked)
        server.kill9()  # no shutdown hook runs: only what reached the disk survives
        stop.set()
        writer.join(10)
        assert before > 0, "the client acknowledged nothing before the kill"
        server.start()
        assert_all_present(server.url, collection, acked)
        record(
            f"kill -9 while a client streams upserts ({server.env.get('JEPA_STORAGE', 'local')} backend, "
            f"{create.get('index', 'flat')})",
            acknowledged=len(acked),
            kills=round_ + 1,
            lost=0,
        )


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_kill9_during_upserts_loses_no_acknowledged_write_local(demo_repository: Path, tmp_path: Path, kind: str):
    server = Server(env={"JEPA_MODEL_REPOSITORY": str(demo_repository), "JEPA_DATA_DIR": str(tmp_path / "data"),
                         "JEPA_STORAGE": "local"}, workdir=tmp_path)
    server.start()
    try:
        crash_and_check(server, "crashy", {"dim": DIM, "index": kind})
    finally:
        server.stop()


def crash_with_writers(server: Server, collection: str, create: dict, *, writers: int, rounds: int,
                       acked_before_kill: int = 150) -> int:
    """kill -9 while `writers` client threads upsert one point per request, `rounds` times; after each restart
    every acknowledged id must be there. Returns how many upserts were acknowledged in all."""
    httpx.put(f"{server.url}/collections/{collection}", json=create, timeout=10).raise_for_status()
    acked: list[str] = []
    for round_ in range(rounds):
        stop = threading.Event()
        threads = [threading.Thread(target=stream_upserts, args=(server.url, collection, acked, stop,
                                                                 f"r{round_}-w{w}-", 1)) for w in range(writers)]
        target = len(acked) + acked_before_kill
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < target:  # the kill lands while every writer is mid-stream
            assert time.monotonic() < deadline, f"only {len(acked)} upserts acknowledged in 60 s"
            time.sleep(0.01)
        server.kill9()
        stop.set()
        for thread in threads:
            thread.join(10)
        server.start()
        assert_all_present(server.url, collection, acked)
    return len(acked)
