"""Start-up against an unreachable Redis, in process: /readyz says why while it retries, and after the give-up time
the app asks its runner to stop with status 75 (the real process is tested in tests/e2e/test_startup_backend.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import EXIT_BACKEND_UNAVAILABLE, create_app
from tests.e2e.processes import free_port


@pytest.fixture
def model_repository(fake_repository: Path) -> Path:
    """The torch-free fake model: start-up behaviour does not depend on the model."""
    return fake_repository


def test_gives_up_after_the_configured_time_and_asks_for_exit_75(settings_factory):
    settings = settings_factory(
        storage="redis",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        embed_cache="memory",
        startup_give_up_s=1.5,
        startup_retry_max_s=0.2,
        warmup=False,
    )
    app = create_app(settings.config)
    exit_codes: list[int] = []
    app.state.stop_process = exit_codes.append
    seen_waiting = None
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while app.state.services.phase != "failed":
            assert time.monotonic() < deadline, "start-up neither failed nor gave up in 60 s"
            body = client.get("/readyz").json()
            if body["phase"] == "waiting_for_backend":
                seen_waiting = body
            time.sleep(0.02)
        final = client.get("/readyz")
    assert seen_waiting is not None, "never reported waiting_for_backend"
    assert "redis unreachable" in seen_waiting["retrying"]["reason"]
    assert seen_waiting["retrying"]["attempts"] >= 1
    assert final.status_code == 503, final.text
    assert final.json()["retrying"]["gave_up"] is True, final.text
    assert final.json()["retrying"]["attempts"] >= 3  # backoff capped at 0.2 s: several attempts in 1.5 s
    assert exit_codes == [EXIT_BACKEND_UNAVAILABLE]


def test_without_a_runner_the_app_stays_up_unready(settings_factory):
    """Embedded in another ASGI server (no `jepa-serve` runner), giving up leaves /readyz 503 'failed'."""
    settings = settings_factory(
        storage="redis",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        embed_cache="memory",
        startup_give_up_s=0,
        warmup=False,
    )
    app = create_app(settings.config)
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while app.state.services.phase != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["phase"] == "failed"
        assert client.get("/healthz").status_code == 200
