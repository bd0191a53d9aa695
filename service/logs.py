"""Structured logs: one JSON object per line, with the request id of the request being served.

The request id comes from the client's `X-Request-ID` (when it is a sane
token) or is made here, is echoed in the response's `X-Request-ID`, and is
attached to every log record written while that request is served.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            if SAFE_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestLogMiddleware:
    """Outermost middleware: request id in/out, and one access-log line per request."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        tag_span(**{"jepa.request_id": request_id})
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                route = scope.get("route")
                client = scope.get("client")
                self.log.info(
                    "%s %s %d", scope["method"], getattr(route, "path", "unmatched"), status,
                    extra={
                        "method": scope["method"],
                        "route": getattr(route, "path", "unmatched"),
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                        "client": client[0] if client else None,
                        "key": scope.get(PRINCIPAL_SCOPE_KEY),
                    },
                )
            request_id_var.reset(token)
