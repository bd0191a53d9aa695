"""The compose topology with real processes: nginx in front of two replicas sharing one Redis.

What this proves, and what it does not:
- load balancing: requests through nginx reach both replicas (each one's own /metrics counts them);
- shared state in Redis: the per-key rate limit is one budget across both replicas;
- auth and limits through the balancer: 401 / 403 / 200 / 413, request ids passed through;
- failover: with one replica killed (SIGKILL) every request through the balancer still succeeds;
- a write through the balancer searchable through the balancer and on every replica (the replicas share
  collections through the redis storage backend, JEPA_STORAGE=redis).
"""

from __future__ import annotations

import base64
import json
import re
import signal
import time

import httpx
import pytest

from tests.deploy.conftest import MAX_BODY_BYTES, RATE_LIMIT, RATE_WINDOW_S, Cluster

pytestmark = pytest.mark.e2e


def requests_on(url: str, route: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("jepa_requests_total{") and f'route="{route}"' in line)


def test_balancer_spreads_requests_over_both_replicas(cluster: Cluster, photos):
    image = base64.b64encode(photos["astronaut"]).decode()
    before = {n: requests_on(u, "/embed") for n, u in cluster.replicas.items()}
    with httpx.Client(base_url=cluster.lb, timeout=30, headers=cluster.auth("reader")) as http:
        for _ in range(12):
            response = http.post("/embed", json={"inputs": [{"image": image}]})
            assert response.status_code == 200, response.text
            assert len(response.json()["embeddings"][0]) == 128
    served = {n: requests_on(u, "/embed") - before[n] for n, u in cluster.replicas.items()}
    assert sum(served.values()) == 12 and all(v >= 3 for v in served.values()), served


def test_auth_and_body_limit_through_the_balancer(cluster: Cluster):
    with httpx.Client(base_url=cluster.lb, timeout=30) as http:
        assert http.get("/collections").status_code == 401
        assert http.put("/collections/lbauth", json={"dim": 4}, headers=cluster.auth("reader")).status_code == 403
        assert http.put("/collections/lbauth", json={"dim": 4}, headers=cluster.auth("writer")).status_code in (200, 201)
        assert http.get("/models", headers=cluster.auth("reader")).status_code == 200
        big = {"collection": "lbauth", "vector": [0.1] * (MAX_BODY_BYTES // 4)}
        too_big = http.post("/search", json=big, headers=cluster.auth("reader"))
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
        # the balancer does not expose one random replica's metrics
        assert http.get("/metrics").status_code == 404


def test_request_id_travels_from_balancer_to_replica_and_back(cluster: Cluster):
    with httpx.Client(base_url=cluster.lb, timeout=30, headers=cluster.auth("reader")) as http:
        assert http.get("/models", headers={"X-Request-ID": "lb-trace-7"}).headers["x-request-id"] == "lb-trace-7"
        made = http.get("/models").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)  # nginx's $request_id, passed on and echoed by the replica
    time.sleep(0.2)
    replica_logs = "".join((cluster.workdir / f"{n}.log").read_text() for n in cluster.replicas)
    access = [json.loads(line) for line in replica_logs.splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == made and line.get("route") == "/models" for line in access)
    assert made in (cluster.workdir / "nginx-access.log").read_text()


def test_rate_limit_is_one_budget_across_replicas_in_redis(cluster: Cluster):
    left = RATE_WINDOW_S - time.time() % RATE_WINDOW_S
    if left < 30:  # do not straddle a window boundary
        time.sleep(left + 0.05)
    codes = []
    with httpx.Client(base_url=cluster.lb, timeout=30, headers=cluster.auth("limited")) as http:
        for _ in range(RATE_LIMIT + 10):
            response = http.get("/collections")
            codes.append(response.status_code)
            if response.status_code == 429:
                assert 1 <= int(response.headers["retry-after"]) <= RATE_WINDOW_S
    # With per-replica counters two replicas would allow up to 2 x RATE_LIMIT.
    assert codes.count(200) == RATE_LIMIT and codes.count(429) == 10, codes


def test_write_through_balancer_is_searchable_everywhere(cluster: Cluster):
    vector = [0.0, 1.0, 0.0, 0.0]
    with httpx.Client(base_url=cluster.lb, timeout=30) as http:
        assert http.put("/collections/shared", json={"dim": 4}, headers=cluster.auth("writer")).status_code in (200, 201)
        stored = http.post("/collections/shared/points", headers=cluster.auth("writer"),
                           json={"ids": ["one"], "vectors": [vector]})
        assert stored.status_code == 200, stored.text
    deadline = time.monotonic() + 2
    for url in [cluster.lb] * 4 + list(cluster.replicas.values()):
        while True:
            hits = httpx.post(f"{url}/search", headers=cluster.auth("reader"), timeout=10,
                              json={"collection": "shared", "vector": vector, "k": 1})
            if hits.status_code == 200 and hits.json()["hits"] and hits.json()["hits"][0]["id"] == "one":
                break
            assert time.monotonic() < deadline, (url, hits.text)
            time.sleep(0.05)


def test_killing_one_replica_keeps_the_service_answering(cluster: Cluster, photos):
    """Last in this module: api-1 stays dead afterwards (api-2 serves the /metrics checks of other modules)."""
    image = base64.b64encode(photos["rocket"]).decode()
    cluster.processes["api-1"].send_signal(signal.SIGKILL)
    cluster.processes["api-1"].wait(10)
    with httpx.Client(base_url=cluster.lb, timeout=30, headers=cluster.auth("admin")) as http:
        codes = []
        for i in range(16):
            response = http.get("/collections") if i % 2 else http.post("/embed", json={"inputs": [{"image": image}]})
            codes.append(response.status_code)
    assert codes == [200] * 16, codes
