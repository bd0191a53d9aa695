"""Structured logs: one JSON object per line, with the request id of the request being served.

The request id comes from the client's `X-Request-ID` (when it is a sane
token) or is made here, is echoed in the response's `X-Request-ID`, and is
attached to every log record written while that request is served.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

try:  # FastAPI's native OpenTelemetry spans (opentelemetry-api); logs and spans share ids when present
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - older FastAPI without the dependency
    otel_trace = None

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

REQUEST_ID_HEADER = b"x-request-id"
# A client-chosen id is echoed into logs and headers: keep it short and free of control characters.
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
ACCESS_LOGGER = "jepa.access"
PRINCIPAL_SCOPE_KEY = "jepa.principal"
# Attributes every record has (and uvicorn's duplicate `color_message`): not extra fields.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.processName != "MainProcess":  # under jepa-serve: jepa-core, jepa-front-0, ...
            out["process"] = record.processName
        request_id = request_id_var.get()
        if request_id is not None:
            out["request_id"] = request_id
        span = _span_context()
        if span is not None:
            out["trace_id"], out["span_id"] = f"{span.trace_id:032x}", f"{span.span_id:016x}"
        # Fields passed with `extra=` (the access log's method, route, status...).
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = request_id_var.get()
        return f"{text} [request_id={request_id}]" if request_id else text


def _span_context():
    """The active span's context, when tracing is configured (a no-op provider's spans are not valid)."""
    if otel_trace is None:
        return None
    context = otel_trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def tag_span(**attributes: str) -> None:
    """Attributes on the request's server span (FastAPI's), when one is recording."""
    if otel_trace is not None:
        span = otel_trace.get_current_span()
        if span.is_recording():
            for key, value in attributes.items():
                span.set_attribute(key, value)


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers go through the same handler (one format on stderr).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _request_id(scope: Scope, made: Iterator[str]) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            if SAFE_REQUEST_ID.match(candidate):
                return candidate
            break
    return next(made)


def request_ids() -> Iterator[str]:
    """Unique ids without a system call each (uuid4 reads the kernel's random source every time): a random
    prefix per process, then a counter."""
    prefix = secrets.token_hex(8)
    for n in itertools.count():
        yield f"{prefix}{n:016x}"



class RequestLogMiddleware:
    """Outermost middleware, one wrapper of `send` for everything a request leaves behind: its id in and out,
    the x-process-time-ms header, the request metrics by route template (never by raw path: unbounded labels)
    and one access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True, front: int | None = None) -> None:
        self.app = app
        self.metrics = metrics
        # which front process answered (x-jepa-front), under jepa-serve: where to look in the logs
        self.served_by = [] if front is None else [(b"x-jepa-front", str(front).encode())]
        self.access_log = access_log
        self.log = logging.getLogger(ACCESS_LOGGER)
        self.ids = request_ids()  # for requests that bring none

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope, self.ids)
        token = request_id_var.set(request_id)
        tag_span(**{"jepa.request_id": request_id})
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode()),
                                      (b"x-process-time-ms", f"{elapsed_ms:.2f}".encode()), *self.served_by]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route=route, method=scope["method"], status=str(status)).inc()
            self.metrics.request_seconds.labels(route=route).observe(elapsed)
            if self.access_log:
                client = scope.get("client")
                self.log.info(
                    "%s %s %d", scope["method"], route, status,
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "client": client[0] if client else None,
                        "key": scope.get(PRINCIPAL_SCOPE_KEY),
                    },
                )
            request_id_var.reset(token)
