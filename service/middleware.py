"""Pure ASGI middleware: the concurrent-request limit and the body-size limit (no BaseHTTPMiddleware buffering).
Request metrics, ids and the access log are service/logs.py's RequestLogMiddleware."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ErrorCode, error_body
from service.ipc.counters import Gate, LocalGate
from service.metrics import Metrics


class BodyLimitMiddleware:
    """413 before the body is read when Content-Length is too big; cut off a chunked body that grows past it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        code = ErrorCode.PAYLOAD_TOO_LARGE
        body = json.dumps(error_body(code, f"request body exceeds {self.max} bytes")).encode()
        await send({"type": "http.response.start", "status": code.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


# Health checks and scrapes must answer while the service is saturated: that is when they matter.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class ConcurrencyLimitMiddleware:
    """429 + Retry-After, before the body is read, when `limit` requests are already being handled.

    Every queue behind the edge (decode and storage executors, batchers) is then bounded by what this many
    requests can put in it, so a burst is refused at once instead of waiting in an executor queue until it
    times out. The count is the whole server's: this process's own (`LocalGate`), or, in a front, every
    front's (`SharedGate`: a place taken under one lock). limit 0 = no limit.
    """

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics, gate: Gate | None = None) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.gate = gate or LocalGate()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if not self.gate.enter(self.limit):
            self.metrics.concurrency_refused.inc()
            code = ErrorCode.OVERLOADED
            body = json.dumps(error_body(code, f"the server is handling {self.limit} requests; retry later",
                                         {"max_concurrent_requests": self.limit})).encode()
            await send({"type": "http.response.start", "status": code.status,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        self.metrics.in_flight.set(self.gate.own)
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave()
            self.metrics.in_flight.set(self.gate.own)
