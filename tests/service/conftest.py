"""The collection suite runs once per storage backend: local files, Redis, and Milvus (the embedded milvus-lite);
the tiny V-JEPA 2-AC and V-JEPA 2 (mask predictor) exports shared by the world-model tests."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import serving
from tests.support.ac_export import ACExport, export_tiny_ac
from tests.support.future_export import export_tiny_future

BACKENDS = ("local", "redis", "milvus")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this test session (no persistence: only the backend's logic is under test here)."""
    import redis

    from tests.e2e.processes import free_port

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: the redis backend's suite needs it (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start in 10 s"
            time.sleep(0.02)
    yield url
    client.close()
    process.terminate()
    process.wait(10)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_settings(backend: str, settings_factory, tmp_path: Path, request):
    """settings_factory, storing collections in `backend` (a fresh store per test)."""
    if backend == "redis":
        store = {
            "storage": "redis",
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": f"t{uuid.uuid4().hex[:8]}",
        }
    elif backend == "milvus":
        store = {"storage": "milvus", "milvus_uri": str(tmp_path / "milvus.db")}
    else:
        store = {"storage": "local"}
    return lambda **overrides: settings_factory(**{**store, **overrides})


@pytest.fixture
def store_client(store_settings) -> Iterator:
    with serving(store_settings()) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def ac_export(tmp_path_factory: pytest.TempPathFactory) -> ACExport:
    """The tiny V-JEPA 2-AC checkpoint exported once: `ac` (with a surprise calibration) and `ac-tiny` (without)."""
    return export_tiny_ac(tmp_path_factory.mktemp("ac_export"))


@pytest.fixture(scope="session")
def future_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny V-JEPA 2 checkpoint with its mask predictor exported once: `vj`, calibrated on normal videos."""
    return export_tiny_future(tmp_path_factory.mktemp("vjepa2_future"))
