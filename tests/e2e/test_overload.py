"""Overload: far more concurrent requests than the queue holds -> 429 with Retry-After, never a 5xx."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import httpx
import pytest

from tests.support.record import record
from tests.support.servers import rss_bytes, running_server

pytestmark = pytest.mark.e2e


async def burst(url: str, body: dict, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(client.post("/embed", json=body) for _ in range(n))))


def test_burst_beyond_the_queue_gets_429_with_retry_after_and_no_5xx(demo_repository: Path, tmp_path: Path, photos):
    # 8 images per request and a queue of 16 items: two requests fill it. The demo engine drains a queue faster
    # than requests decode, so batches are held open for 300 ms (batch_wait=always): the queue really fills.
    body = {"inputs": [{"image": base64.b64encode(photos["astronaut"]).decode()}] * 8}
    with running_server(demo_repository, tmp_path, max_queue_size="16", max_batch_size="64", batch_wait="always",
                        max_queue_delay_ms="300", batch_tune="false") as server:
        rss_before = rss_bytes(server.pid)
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            responses = asyncio.run(burst(server.url, body, 48))
            rounds.append((responses, time.perf_counter() - started))
        statuses = [r.status_code for responses, _ in rounds for r in responses]
        assert set(statuses) <= {200, 429}, sorted(set(statuses))
        assert statuses.count(429) > 0
        assert statuses.count(200) > 0
        refused = next(r for responses, _ in rounds for r in responses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "overloaded"
        ok = next(r for responses, _ in rounds for r in responses if r.status_code == 200)
        assert len(ok.json()["embeddings"]) == 8
        # Admitted requests are bounded by the queue, not by the burst: a round takes seconds, not minutes.
        assert max(seconds for _, seconds in rounds) < 60
        # The service recovers at once: a lone request after the bursts is served.
        assert httpx.post(f"{server.url}/embed", json=body, timeout=30).status_code == 200
        rss_after = rss_bytes(server.pid)
        metrics = httpx.get(f"{server.url}/metrics").text
    record("overload: 3 bursts of 48 requests x 8 images, queue of 16 items",
           requests=len(statuses), ok=statuses.count(200), refused_429=statuses.count(429),
           server_errors=sum(s >= 500 for s in statuses), slowest_round_s=round(max(s for _, s in rounds), 2),
           rss_growth_mb=round((rss_after - rss_before) / 2**20, 1))
    assert 'reason="queue_full"' in metrics
    # No leak per refused request: three bursts leave the process within 100 MB of where it started.
    assert rss_after - rss_before < 100 * 1024 * 1024, (rss_before, rss_after)
