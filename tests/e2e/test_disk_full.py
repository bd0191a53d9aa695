"""Disk full under the write-ahead log: writes refused with a clear error, reads go on, nothing acknowledged is lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.record import record
from tests.support.servers import running_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_refuses_writes_keeps_reads_and_recovers(demo_repository: Path, tmp_path: Path, small_disk: Path):
    rng = np.random.default_rng(0)
    workdir = tmp_path / "work"
    acknowledged: dict[str, list[float]] = {}
    with running_server(demo_repository, workdir, data_dir=str(small_disk / "data")) as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        assert http.put("/collections/full", json={"dim": 64, "metric": "l2"}).status_code == 201
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (1024 * 1024))  # leave well under 1 MB for the log
        refused = None
        for batch in range(200):
            ids = [f"p{batch}-{i}" for i in range(20)]
            vectors = rng.standard_normal((20, 64)).round(3).tolist()
            r = http.post("/collections/full/points", json={"ids": ids, "vectors": vectors})
            if r.status_code == 200:
                acknowledged.update(zip(ids, vectors, strict=True))
                continue
            refused = r
            break
        assert refused is not None, "the disk never filled"
        assert refused.status_code == 507
        assert refused.json()["error"]["code"] == "storage_error"  # the disk refused it: 507, not a 503 outage
        assert "nothing was applied" in refused.json()["error"]["message"]
        count = http.get("/collections/full").json()["count"]
        assert count == len(acknowledged) > 0
        # Reads go on while writes are refused.
        some_id, some_vector = next(iter(acknowledged.items()))
        hit = http.post("/search", json={"collection": "full", "vector": some_vector, "k": 1}).json()["hits"][0]
        assert hit["id"] == some_id
        # Space comes back: writes work again without a restart.
        filler.unlink()
        again = http.post("/collections/full/points", json={"ids": ["after"], "vectors": [[0.5] * 64]})
        assert again.status_code == 200
        acknowledged["after"] = [0.5] * 64
        http.close()
    with running_server(demo_repository, workdir, data_dir=str(small_disk / "data")) as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        recovered = http.get("/collections/full").json()["count"]
        record("disk full under the write-ahead log (2 MB tmpfs)", acknowledged=len(acknowledged), refused_507=1,
               present_after_restart=recovered, lost=len(acknowledged) - recovered, reads_during_outage="served")
        assert recovered == len(acknowledged)
        for point_id in list(acknowledged)[:: max(1, len(acknowledged) // 20)]:
            stored = http.get(f"/collections/full/points/{point_id}").json()["vector"]
            np.testing.assert_allclose(stored, acknowledged[point_id], atol=1e-6)
        http.close()
