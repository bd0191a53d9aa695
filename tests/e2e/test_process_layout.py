"""jepa-serve's process layout from outside: front processes on one port, one core behind them.

Each test starts a real server with two fronts and reaches a chosen front by keeping connections open: every
answer names its front (x-jepa-front), and a kept-alive connection stays with the front that accepted it.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests.server import server_processes
from tests.e2e.processes import Server
from tests.support.record import record

pytestmark = pytest.mark.e2e
FRONTS = 2


def clients_by_front(url: str, per_front: int, headers: dict[str, str] | None = None) -> dict[int, list[httpx.Client]]:
    """Kept-alive clients, grouped by the front that accepted their connection (the kernel chooses: open more
    until every front has `per_front`)."""
    found: dict[int, list[httpx.Client]] = defaultdict(list)
    spare: list[httpx.Client] = []
    for _ in range(200):
        client = httpx.Client(base_url=url, timeout=60, headers=headers or {})
        front = int(client.get("/healthz").headers["x-jepa-front"])
        (found[front] if len(found[front]) < per_front else spare).append(client)
        if len(found) == FRONTS and all(len(c) >= per_front for c in found.values()):
            break
    for client in spare:
        client.close()
    assert sorted(found) == list(range(FRONTS)), f"connections reached fronts {sorted(found)} only"
    return found


def close_all(groups: dict[int, list[httpx.Client]]) -> None:
    for clients in groups.values():
        for client in clients:
            client.close()


def metric(text: str, name: str, *labels: str) -> float:
    """The sum of a metric's samples that carry every label given (e.g. 'component="encoder"')."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(label in line for label in labels))


def layout_server(repository: Path, tmp_path: Path, **settings: str) -> Server:
    env = {"JEPA_MODEL_REPOSITORY": str(repository), "JEPA_DATA_DIR": str(tmp_path / "data"),
           "JEPA_WORKERS": str(FRONTS), **{f"JEPA_{k.upper()}": v for k, v in settings.items()}}
    return Server(env=env, workdir=tmp_path).start(timeout=90)


def test_requests_from_both_fronts_share_one_batch_and_every_front_is_counted(demo_repository, photos, tmp_path):
    # A batch leaves only when full (8 items) or after 10 s: 4 requests from each front make exactly one batch.
    server = layout_server(demo_repository, tmp_path, max_batch_size="8", max_queue_delay_ms="10000",
                           batch_wait="always", batch_tune="false")
    groups: dict[int, list[httpx.Client]] = {}
    try:
        groups = clients_by_front(server.url, per_front=4)
        image = base64.b64encode(photos["coffee"]).decode()
        before = httpx.get(f"{server.url}/metrics", timeout=10).text
        calls = [(front, client) for front, clients in groups.items() for client in clients]
        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(
                lambda call: call[1].post("/embed", json={"inputs": [{"image": image}]}), calls))
        assert [a.status_code for a in answers] == [200] * 8
        assert sorted(int(a.headers["x-jepa-front"]) for a in answers) == [0] * 4 + [1] * 4
        after = {front: clients[0].get("/metrics").text for front, clients in groups.items()}
        encoder = 'component="encoder"'
        batches = {f: metric(t, "jepa_batch_size_count", encoder) - metric(before, "jepa_batch_size_count", encoder)
                   for f, t in after.items()}
        items = {f: metric(t, "jepa_batch_size_sum", encoder) - metric(before, "jepa_batch_size_sum", encoder)
                 for f, t in after.items()}
        assert batches == {0: 1.0, 1: 1.0}, batches  # one engine call for the requests of both fronts
        assert items == {0: 8.0, 1: 8.0}, items
        # /metrics on either front counts the requests both fronts answered
        embeds = {f: metric(t, "jepa_requests_total", 'route="/embed"', 'status="200"') for f, t in after.items()}
        assert embeds == {0: 8.0, 1: 8.0}, embeds
    finally:
        close_all(groups)
        server.stop()
    record("requests through two fronts, one engine batch", requests=8, batches=1, fronts=FRONTS)


def test_a_collection_written_through_one_front_is_read_through_the_other_at_once(demo_repository, tmp_path):
    server = layout_server(demo_repository, tmp_path)
    groups: dict[int, list[httpx.Client]] = {}
    try:
        groups = clients_by_front(server.url, per_front=1)
        first, second = groups[0][0], groups[1][0]
        assert first.put("/collections/shared", json={"dim": 4}).status_code == 201
        vectors = np.eye(4, dtype=np.float32)
        for round_ in range(20):
            writer, reader = (first, second) if round_ % 2 == 0 else (second, first)
            ids = [f"r{round_}-{i}" for i in range(4)]
            upserted = writer.post("/collections/shared/points", json={"ids": ids, "vectors": vectors.tolist()})
            assert upserted.status_code == 200, upserted.text
            got = reader.get(f"/collections/shared/points/{ids[2]}")  # the very next request, on the other front
            assert got.status_code == 200, got.text
            assert got.json()["vector"] == vectors[2].tolist()
            assert reader.get("/collections/shared").json()["count"] == 4 * (round_ + 1)
        assert first.delete("/collections/shared").status_code == 204
        assert second.get("/collections/shared").status_code == 404
    finally:
        close_all(groups)
        server.stop()


def test_the_request_limit_and_the_rate_limit_hold_for_the_whole_server(demo_repository, photos, tmp_path):
    # Admitted /embed requests wait 10 s in the batch queue (it leaves when 64 items are there), so a place taken
    # stays taken while the others arrive.
    server = layout_server(demo_repository, tmp_path, max_concurrent_requests="3", max_queue_delay_ms="10000",
                           batch_wait="always", batch_tune="false", max_batch_size="64",
                           rate_limit_requests="10", rate_limit_window_s="3600")
    groups: dict[int, list[httpx.Client]] = {}
    try:
        groups = clients_by_front(server.url, per_front=3)
        image = base64.b64encode(photos["coffee"]).decode()
        calls = [client for clients in groups.values() for client in clients]
        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(lambda client: client.post(
                "/embed", json={"inputs": [{"image": image}], "timeout_ms": 1500}), calls))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [429, 429, 429, 504, 504, 504], statuses  # 3 places: the others refused at once
        refused = [a for a in answers if a.status_code == 429]
        assert {a.json()["error"]["code"] for a in refused} == {"overloaded"}
        # 6 requests counted so far against a limit of 10 per window, for the one client address
        alternating = [groups[i % 2][0].get("/limits").status_code for i in range(8)]
        assert alternating == [200, 200, 200, 200, 429, 429, 429, 429], alternating
    finally:
        close_all(groups)
        server.stop()


def stream_upserts(url: str, acked: list[str], stop: threading.Event, prefix: str) -> None:
    rng = np.random.default_rng(len(prefix))
    n = 0
    while not stop.is_set():
        try:
            with httpx.Client(base_url=url, timeout=5) as http:
                while not stop.is_set():
                    ids = [f"{prefix}{n}"]
                    r = http.post("/collections/crash/points",
                                  json={"ids": ids, "vectors": rng.standard_normal((1, 8)).tolist()})
                    if r.status_code == 200:
                        acked.extend(ids)
                    n += 1
        except httpx.TransportError:
            n += 1  # that request was never acknowledged; reconnect (to a front that is still there)


def child(server: Server, name: str, missing_ok: bool = False) -> int | None:
    """The pid of the server's process of that name (jepa-core, jepa-front-N)."""
    for pid in server_processes(server.process.pid)[1:]:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                return pid
        except OSError:
            continue
    if missing_ok:
        return None
    raise AssertionError(f"no {name} process under {server.process.pid}")


def test_kill9_of_a_front_then_of_the_core_loses_no_acknowledged_upsert(demo_repository, tmp_path):
    server = layout_server(demo_repository, tmp_path)
    httpx.put(f"{server.url}/collections/crash", json={"dim": 8}, timeout=10).raise_for_status()
    acked: list[str] = []
    stop = threading.Event()
    writers = [threading.Thread(target=stream_upserts, args=(server.url, acked, stop, f"w{i}-")) for i in range(4)]
    for writer in writers:
        writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 50:
            assert time.monotonic() < deadline, "no upserts acknowledged"
            time.sleep(0.05)
        front = child(server, "jepa-front-0")
        subprocess.run(["kill", "-9", str(front)], check=True)
        after_front = len(acked)
        while len(acked) < after_front + 50:  # the writers go on through the other front and the new one
            assert time.monotonic() < deadline + 30, "no upserts acknowledged after a front was killed"
            time.sleep(0.05)
        while child(server, "jepa-front-0", missing_ok=True) in (front, None):  # the supervisor starts it again
            assert time.monotonic() < deadline + 60, "the killed front was not replaced"
            time.sleep(0.05)
        subprocess.run(["kill", "-9", str(child(server, "jepa-core"))], check=True)
        code = server.process.wait(60)  # the core is gone: the whole server stops, with a status that says so
    finally:
        stop.set()
        for writer in writers:
            writer.join(30)
        server.stop()  # a no-op when the server has stopped as it should
    assert code == 70, (code, server.output()[-3000:])
    assert "the core process exited" in server.output()
    restarted = Server(env=server.env, workdir=tmp_path).start(timeout=90)
    try:
        with httpx.Client(base_url=restarted.url, timeout=10) as http:
            missing = [i for i in acked if http.get(f"/collections/crash/points/{i}").status_code != 200]
    finally:
        restarted.stop()
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged upserts lost, e.g. {missing[:5]}"
    record("kill -9 of a front, then of the core, while 4 clients upsert (local backend)",
           acknowledged=len(acked), lost=len(missing))


def test_no_process_outlives_a_killed_supervisor_and_the_server_restarts_at_once(demo_repository, tmp_path):
    server = layout_server(demo_repository, tmp_path)
    processes = server_processes(server.process.pid)
    try:
        assert len(processes) >= 1 + 1 + FRONTS  # supervisor, core, fronts (and multiprocessing's resource tracker)
    finally:
        server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    restarted = Server(env=server.env, workdir=tmp_path).start(timeout=90)  # same port's data dir: not refused
    try:
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in processes[1:]):
            assert time.monotonic() < deadline, "a child outlived its killed supervisor"
            time.sleep(0.05)
        assert httpx.get(f"{restarted.url}/readyz", timeout=10).status_code == 200
    finally:
        restarted.stop()
