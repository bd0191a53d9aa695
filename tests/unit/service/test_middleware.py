"""The concurrent-request limit: 429 + Retry-After at the edge once `limit` requests are in flight."""

import asyncio
import json

from service.metrics import Metrics
from service.middleware import ConcurrencyLimitMiddleware


def _scope(path: str) -> dict:
    return {"type": "http", "path": path, "method": "POST", "headers": []}


async def _call(app, path: str) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(_scope(path), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_requests_past_the_limit_are_refused_and_health_still_answers():
    async def scenario():
        release, both_inside = asyncio.Event(), asyncio.Event()
        entered = 0

        async def slow_app(scope, receive, send):
            nonlocal entered
            entered += 1
            if entered == 2:
                both_inside.set()
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        metrics = Metrics()
        app = ConcurrencyLimitMiddleware(slow_app, limit=2, metrics=metrics)
        held = [asyncio.create_task(_call(app, "/embed")) for _ in range(2)]
        await asyncio.wait_for(both_inside.wait(), 5)
        status, headers, body = await _call(app, "/embed")
        assert status == 429
        assert headers[b"retry-after"] == b"1"
        error = json.loads(body)["error"]
        assert error["code"] == "overloaded"
        assert error["detail"] == {"max_concurrent_requests": 2}
        health = asyncio.create_task(_call(app, "/healthz"))  # not counted: answers once released like the others
        assert metrics.in_flight._value.get() == 2
        release.set()
        assert [r[0] for r in await asyncio.gather(*held, health)] == [200, 200, 200]
        assert app.gate.count == 0
        assert metrics.concurrency_refused._value.get() == 1
        assert (await _call(app, "/embed"))[0] == 200  # a slot is free again

    asyncio.run(scenario())


def test_zero_means_no_limit():
    async def scenario():
        async def app_(scope, receive, send):
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        app = ConcurrencyLimitMiddleware(app_, limit=0, metrics=Metrics())
        assert [s for s, _, _ in await asyncio.gather(*(_call(app, "/embed") for _ in range(5)))] == [204] * 5

    asyncio.run(scenario())


def test_decode_and_storage_work_run_on_their_own_named_threads():
    import threading

    from service.settings import Settings
    from service.state import Executors, Services

    config = Settings().config
    services = Services(config=config, metrics=Metrics(), models=None, store=None,
                        executors=Executors.from_config(config.processes, config.media))

    async def scenario():
        return (await services.decode(lambda: threading.current_thread().name),
                await services.storage(lambda: threading.current_thread().name))

    try:
        decode, storage = asyncio.run(scenario())
    finally:
        services.executors.shutdown()
    assert decode.startswith("decode")
    assert storage.startswith("storage")
