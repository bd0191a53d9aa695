"""Real server processes on the milvus backend.

milvus-lite's embedded engine is one process's: it holds an exclusive lock on its data folder, so two API
processes cannot open the same `.db` file. Two replicas therefore share a `milvus-lite server` (the same
engine, started as its own process and reached over gRPC at an http:// URI, as a Milvus server would be).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.processes import Server, free_port
from tests.e2e.test_crash import DIM, assert_all_present, crash_and_check, crash_with_writers
from tests.support.record import record

pytestmark = pytest.mark.e2e


@dataclass
class MilvusLiteServer:
    """`milvus-lite server` on a data folder: the embedded engine as a process of its own."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> MilvusLiteServer:
        exe = shutil.which("milvus-lite", path=str(Path(sys.executable).parent)) or "milvus-lite"
        self.process = subprocess.Popen(
            [exe, "server", "--data-dir", str(self.folder), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                assert self.process.poll() is None, "milvus-lite server exited at start"
                assert time.monotonic() < deadline, "milvus-lite server did not listen in time"
                time.sleep(0.05)

    def kill9(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[MilvusLiteServer]:
    server = MilvusLiteServer(tmp_path / "milvus").start()
    yield server
    server.stop()


def replica(demo_repository: Path, tmp_path: Path, uri: str, **env: str) -> Server:
    return Server(
        env={
            "JEPA_MODEL_REPOSITORY": str(demo_repository),
            "JEPA_STORAGE": "milvus",
            "JEPA_MILVUS_URI": uri,
            "JEPA_DATA_DIR": str(tmp_path / "unused"),
            "JEPA_MILVUS_REFRESH_S": "0.2",
            **env,
        },
        workdir=tmp_path,
    )


def top_id(url: str, vector: list[float]) -> str | None:
    r = httpx.post(f"{url}/search", json={"collection": "shared", "vector": vector, "k": 1}, timeout=10)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    return hits[0]["id"] if hits else None


def test_an_acknowledged_write_through_one_replica_is_seen_at_once_through_the_other(
    demo_repository, tmp_path, milvus_server
):
    a = replica(demo_repository, tmp_path, milvus_server.uri).start()
    b = replica(demo_repository, tmp_path, milvus_server.uri).start()
    try:
        assert httpx.put(f"{a.url}/collections/shared", json={"dim": DIM, "index": "hnsw"}).status_code == 201
        # A create made elsewhere reaches b's list of collections at its next refresh (every 0.2 s here): polled.
        deadline = time.monotonic() + 5
        while httpx.get(f"{b.url}/collections/shared").status_code != 200:
            assert time.monotonic() < deadline, "replica b never listed the collection"
            time.sleep(0.02)
        rng = np.random.default_rng(3)
        for n in range(20):
            writer, reader = (a, b) if n % 2 == 0 else (b, a)
            vector = rng.standard_normal(DIM).tolist()
            r = httpx.post(f"{writer.url}/collections/shared/points",
                           json={"ids": [f"p{n}"], "vectors": [vector], "metadata": [{"n": n}]}, timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["count"] == n + 1, r.text
            # No waiting: Strong reads see every acknowledged write, whichever replica took it.
            assert top_id(reader.url, vector) == f"p{n}"
            assert httpx.get(f"{reader.url}/collections/shared").json()["count"] == n + 1
        filtered = httpx.post(f"{b.url}/search", json={"collection": "shared", "vector": [1.0] * DIM, "k": 20,
                                                       "filter": {"n": {"gte": 15}}}).json()["hits"]
        assert sorted(h["metadata"]["n"] for h in filtered) == [15, 16, 17, 18, 19]
        assert (
            httpx.request("DELETE", f"{b.url}/collections/shared/points", json={"ids": ["p4"]}).json()["deleted"] == 1
        )
        assert httpx.get(f"{a.url}/collections/shared/points/p4").status_code == 404
        # Dropping through one replica drops it for the other.
        assert httpx.delete(f"{b.url}/collections/shared").status_code == 204
        assert httpx.get(f"{a.url}/collections/shared/points/p1").status_code == 404
        record("milvus backend: write through one replica, read through the other", writes=20, seen_at_once=20)
    finally:
        a.stop()
        b.stop()


def test_milvus_down_is_503_with_retry_after_and_writes_resume(demo_repository, tmp_path, milvus_server):
    api = replica(demo_repository, tmp_path, milvus_server.uri, JEPA_MILVUS_TIMEOUT_S="2").start()
    try:
        assert httpx.put(f"{api.url}/collections/shared", json={"dim": DIM}).status_code == 201
        assert (
            httpx.post(
                f"{api.url}/collections/shared/points", json={"ids": ["a"], "vectors": [[1.0] * DIM]}
            ).status_code
            == 200
        )
        milvus_server.kill9()
        for r in (
            httpx.post(
                f"{api.url}/collections/shared/points", json={"ids": ["b"], "vectors": [[2.0] * DIM]}, timeout=30
            ),
            httpx.post(f"{api.url}/search", json={"collection": "shared", "vector": [1.0] * DIM}, timeout=30),
        ):
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "storage_unavailable"
            assert int(r.headers["retry-after"]) >= 1
        milvus_server.start()  # same folder: the engine recovers from its own WAL
        deadline = time.monotonic() + 30
        while (r := httpx.post(f"{api.url}/collections/shared/points", json={"ids": ["c"], "vectors": [[3.0] * DIM]},
                               timeout=30)).status_code != 200:
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert httpx.get(f"{api.url}/collections/shared/points/a").status_code == 200
    finally:
        api.stop()


def test_kill9_during_upserts_loses_no_acknowledged_write_milvus_embedded(demo_repository, tmp_path):
    """The embedded engine lives in the API process: kill -9 kills both; its WAL brings every acknowledged write
    back."""
    server = replica(demo_repository, tmp_path, str(tmp_path / "milvus.db"))
    server.start()
    try:
        crash_and_check(server, "crashy", {"dim": DIM, "index": "hnsw"})
    finally:
        server.stop()


@pytest.mark.parametrize("writers", [4, 16])
def test_kill9_during_concurrent_single_point_upserts_loses_nothing_milvus_embedded(demo_repository, tmp_path,
                                                                                   writers):
    """Concurrent upserts into the embedded engine used to interleave inside its write-ahead log: after a kill -9
    it stopped reading at the first torn record and every acknowledged write after it was gone."""
    server = replica(demo_repository, tmp_path, str(tmp_path / "milvus.db"))
    server.start()
    try:
        acknowledged = crash_with_writers(server, "crashy", {"dim": DIM, "index": "flat"}, writers=writers, rounds=2)
        record(f"kill -9 while {writers} client threads upsert single points (milvus embedded)",
               acknowledged=acknowledged, kills=2, lost=0)
    finally:
        server.stop()


def test_kill9_of_the_api_and_of_milvus_loses_no_acknowledged_write(demo_repository, tmp_path, milvus_server):
    server = replica(demo_repository, tmp_path, milvus_server.uri).start()
    try:
        crash_and_check(server, "crashy", {"dim": DIM, "index": "flat"}, rounds=1)
        # and kill -9 the engine's own process while a client streams upserts through the API
        import threading

        from tests.e2e.test_crash import stream_upserts

        acked: list[str] = []
        stop = threading.Event()
        writer = threading.Thread(target=stream_upserts, args=(server.url, "crashy", acked, stop, "milvus-kill-"))
        writer.start()
        deadline = time.monotonic() + 30
        while len(acked) < 20:
            assert time.monotonic() < deadline, "no upserts acknowledged"
            time.sleep(0.05)
        milvus_server.kill9()
        stop.set()
        writer.join(30)
        milvus_server.start()
        server.kill9()
        server.start()
        assert_all_present(server.url, "crashy", acked)
        record("kill -9 of milvus-lite server while a client streams upserts", acknowledged=len(acked), lost=0)
    finally:
        server.stop()
