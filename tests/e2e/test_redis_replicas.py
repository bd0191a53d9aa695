"""Two real server processes on the redis backend, sharing a private redis-server (AOF, fsync always)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.processes import RedisServer, Server
from tests.e2e.test_crash import DIM, assert_all_present, crash_and_check, stream_upserts

pytestmark = pytest.mark.e2e


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder).start()
    yield server
    server.stop()


def replica(demo_repository: Path, tmp_path: Path, redis_server: RedisServer) -> Server:
    return Server(env={"JEPA_MODEL_REPOSITORY": str(demo_repository), "JEPA_STORAGE": "redis",
                       "JEPA_REDIS_URL": redis_server.url, "JEPA_DATA_DIR": str(tmp_path / "unused")}, workdir=tmp_path)


def wait_for(check, timeout: float) -> float:
    """Seconds until check() is true; fails after timeout."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not true within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def searchable(url: str, collection: str, vector: list[float], point_id: str) -> bool:
    r = httpx.post(f"{url}/search", json={"collection": collection, "vector": vector, "k": 1}, timeout=5)
    return r.status_code == 200 and bool(r.json()["hits"]) and r.json()["hits"][0]["id"] == point_id


def test_a_write_through_one_replica_is_searchable_through_the_other(demo_repository, tmp_path, redis_server):
    a = replica(demo_repository, tmp_path, redis_server).start()
    b = replica(demo_repository, tmp_path, redis_server).start()
    try:
        assert httpx.put(f"{a.url}/collections/shared", json={"dim": DIM, "index": "hnsw"}).status_code == 201
        wait_for(lambda: httpx.get(f"{b.url}/collections/shared").status_code == 200, 1.0)
        rng = np.random.default_rng(1)
        for n in range(5):
            vector = rng.standard_normal(DIM).tolist()
            r = httpx.post(
                f"{a.url}/collections/shared/points",
                json={"ids": [f"p{n}"], "vectors": [vector], "metadata": [{"n": n}]},
            )
            assert r.status_code == 200, r.text
            assert searchable(a.url, "shared", vector, f"p{n}")  # read-your-writes on the replica that took it
            wait_for(lambda v=vector, i=f"p{n}": searchable(b.url, "shared", v, i), 1.0)
        # Deletes travel too.
        httpx.request("DELETE", f"{b.url}/collections/shared/points", json={"ids": ["p4"]}).raise_for_status()
        wait_for(lambda: httpx.get(f"{a.url}/collections/shared/points/p4").status_code == 404, 1.0)
        # A restarted replica rebuilds from Redis and catches up with what it missed while down.
        b.kill9()
        more = rng.standard_normal((20, DIM))
        httpx.post(f"{a.url}/collections/shared/points",
                   json={"ids": [f"q{i}" for i in range(20)], "vectors": more.tolist()}).raise_for_status()
        b.start()
        assert httpx.get(f"{b.url}/collections/shared").json()["count"] == 24
        assert searchable(b.url, "shared", more[7].tolist(), "q7")
        httpx.post(
            f"{a.url}/collections/shared/points", json={"ids": ["late"], "vectors": [more[0].tolist()]}
        ).raise_for_status()
        wait_for(lambda: httpx.get(f"{b.url}/collections/shared/points/late").status_code == 200, 1.0)
        # Dropping through one replica drops it everywhere.
        assert httpx.delete(f"{b.url}/collections/shared").status_code == 204
        wait_for(lambda: httpx.get(f"{a.url}/collections/shared").status_code == 404, 1.0)
    finally:
        a.stop()
        b.stop()


def test_kill9_during_upserts_loses_no_acknowledged_write_redis(demo_repository, tmp_path, redis_server):
    server = replica(demo_repository, tmp_path, redis_server).start()
    try:
        crash_and_check(server, "crashy", {"dim": DIM, "index": "flat"})
        # And kill -9 Redis itself (AOF with appendfsync always) while a client streams upserts.
        acked: list[str] = []
        stop = threading.Event()
        writer = threading.Thread(target=stream_upserts, args=(server.url, "crashy", acked, stop, "redis-kill-"))
        writer.start()
        time.sleep(1.0)
        redis_server.process.kill()
        redis_server.process.wait(5)
        stop.set()
        writer.join(10)
        assert acked
        redis_server.start()
        server.kill9()
        server.start()
        assert_all_present(server.url, "crashy", acked)
    finally:
        server.stop()
