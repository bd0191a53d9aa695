"""Two real servers on one data directory: the second refuses to start, and the first keeps every write.

Before the lock, the second server started without a word, both appended to the same write-ahead log,
and whichever snapshotted last truncated the other's acknowledged writes away (5 of 5 lost).
"""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from tests.support.record import record
from tests.support.servers import BIN, free_port, running_server

pytestmark = pytest.mark.e2e


def test_second_server_on_the_same_data_directory_refuses_to_start(demo_repository, tmp_path):
    data = tmp_path / "data"
    with running_server(demo_repository, tmp_path / "first", data_dir=str(data)) as first:
        assert httpx.put(f"{first.url}/collections/shared", json={"dim": 4}, timeout=10).status_code == 201
        ids = [f"p{i}" for i in range(5)]
        r = httpx.post(f"{first.url}/collections/shared/points", timeout=10,
                       json={"ids": ids, "vectors": [[float(i), 1.0, 0.0, 0.0] for i in range(5)]})
        assert r.status_code == 200, r.text

        env = {**os.environ, "JEPA_MODEL_REPOSITORY": str(demo_repository), "JEPA_DATA_DIR": str(data)}
        second = subprocess.run(
            [str(BIN / "jepa-serve"), "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 1, (second.returncode, second.stdout[-2000:], second.stderr[-2000:])
        # one line says why (other lines may be log warnings, e.g. an unknown JEPA_* variable), no traceback
        refusals = [line for line in second.stderr.splitlines() if line.startswith("jepa-serve:")]
        assert len(refusals) == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
        message = refusals[0]
        assert str(data.resolve()) in message and f"pid {first.pid}" in message, message

        # the first server neither noticed nor lost anything
        got = httpx.get(f"{first.url}/collections/shared", timeout=10).json()
        assert got["count"] == 5, got
    # the lock went with the first server: a new one on the same directory starts and sees its writes
    with running_server(demo_repository, tmp_path / "third", data_dir=str(data)) as third:
        count = httpx.get(f"{third.url}/collections/shared", timeout=10).json()["count"]
    assert count == 5
    record("second server started on a data directory in use (local backend)",
           refused_at_start="yes" if second.returncode == 1 else "no", exit_code=second.returncode,
           holder_pid_named="yes", points_after_restart=count, lost=5 - count)
