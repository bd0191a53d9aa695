"""Start-up while Redis cannot be reached (redis backend), with a real `jepa-serve` process and a private
redis-server: the process retries with backoff and /readyz says why; it becomes ready once Redis comes up, or
exits with status 75 after JEPA_STARTUP_GIVE_UP_S, so that an orchestrator restarts it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from service.app import EXIT_BACKEND_UNAVAILABLE
from tests.e2e.processes import BIN, RedisServer, free_port
from tests.support.record import record
from tests.support.toolkit import stop

pytestmark = pytest.mark.e2e


def launch(
    demo_repository: Path, workdir: Path, redis_port: int, give_up_s: float
) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = workdir / f"server-{port}.log"
    env = {
        **os.environ,
        "JEPA_MODEL_REPOSITORY": str(demo_repository),
        "JEPA_DATA_DIR": str(workdir / "unused"),
        "JEPA_STORAGE": "redis",
        "JEPA_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "JEPA_EMBED_CACHE": "memory",
        "JEPA_STARTUP_GIVE_UP_S": str(give_up_s),
        "JEPA_STARTUP_RETRY_MAX_S": "0.5",
        "JEPA_LOG_FORMAT": "text",
        "JEPA_INTRA_OP_THREADS": "1",
        "JEPA_DECODE_THREADS": "1",
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "jepa-serve"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}", log


def readyz(url: str) -> tuple[int, dict]:
    try:
        response = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.TransportError:
        return 0, {}
    return response.status_code, response.json()


def poll(condition, timeout: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        assert process.poll() is None, (
            f"the server exited ({process.returncode}) while {what}:\n{log.read_text()[-2000:]}"
        )
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}\n{log.read_text()[-2000:]}")


def test_startup_waits_for_redis_and_recovers(demo_repository: Path, tmp_path: Path):
    redis_port = free_port()  # nothing listens there yet
    process, url, log = launch(demo_repository, tmp_path, redis_port, give_up_s=300)
    redis = None
    try:

        def waiting() -> dict | None:
            status, body = readyz(url)
            retrying = body.get("retrying") or {}
            return (
                body
                if status == 503 and body.get("phase") == "waiting_for_backend" and retrying.get("attempts", 0) >= 3
                else None
            )

        body = poll(waiting, 90, "/readyz reports waiting_for_backend after 3 attempts", process, log)
        assert "redis unreachable" in body["retrying"]["reason"], body
        assert body["retrying"]["give_up_in_s"] > 0, body
        folder = tmp_path / "redis"
        folder.mkdir()
        redis = RedisServer(folder, port=redis_port).start()
        came_up = time.monotonic()
        poll(lambda: readyz(url)[0] == 200, 60, "ready once Redis is up", process, log)
        recovery_s = time.monotonic() - came_up
        ready = readyz(url)[1]
        assert ready["phase"] == "ready", ready
        assert "retrying" not in ready, ready
        created = httpx.put(f"{url}/collections/after", json={"dim": 4}, timeout=10)
        assert created.status_code == 201, created.text  # the store works: the write went to Redis
        record(
            "start-up with Redis away recovers",
            attempts_before_redis=body["retrying"]["attempts"],
            ready_after_redis_s=round(recovery_s, 2),
        )
    finally:
        stop(process)
        if redis is not None:
            redis.stop()


def test_startup_gives_up_and_exits_non_zero(demo_repository: Path, tmp_path: Path):
    redis_port = free_port()  # and Redis never comes
    started = time.monotonic()
    process, url, log = launch(demo_repository, tmp_path, redis_port, give_up_s=3)
    try:
        code = process.wait(120)
    except subprocess.TimeoutExpired:
        stop(process)
        raise AssertionError(
            f"still running 120 s after start with a 3 s give-up time:\n{log.read_text()[-2000:]}"
        ) from None
    output = log.read_text()
    assert code == EXIT_BACKEND_UNAVAILABLE == 75, (code, output[-2000:])
    assert "start-up gave up" in output, output[-2000:]
    assert "redis unreachable" in output, output[-2000:]
    record(
        "start-up with Redis away past the give-up time exits 75",
        exit_code=code,
        exited_after_s=round(time.monotonic() - started, 1),
    )
