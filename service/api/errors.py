"""Errors to HTTP responses, `{"error": {"code", "message", "detail"}}`, statuses from service/errors.py's table."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.errors import ErrorCode, ServiceError, Unauthorized, error_body

log = logging.getLogger(__name__)


def error_response(code: ErrorCode, message: str, detail: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=code.status, content=error_body(code, message, detail), headers=headers)


def _clean_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Location and message only: echoing the input back could leak or bloat (a 10 MB base64 string)."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors[:20]
    ]


def body_validation_error(exc: ValidationError) -> RequestValidationError:
    """A body a route parses itself (/embed: JSON or multipart) located as FastAPI locates the bodies it parses,
    ["body", field, ...], so that validation errors of every route read alike (["query", ...] and ["path", ...]
    for parameters)."""
    return RequestValidationError([{**error, "loc": ("body", *error.get("loc", ()))} for error in exc.errors()])


async def handle_service_error(_: Request, exc: ServiceError) -> JSONResponse:
    if exc.status >= 500 and exc.status not in (503, 504, 507):  # the expected ones are not the server's fault
        log.error("request failed: %s", exc.message)
    headers = None
    retry_after = getattr(exc, "retry_after_s", None)  # overload, or a shared store that is down
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="jepa-serve"'}
    return error_response(exc.code, exc.message, exc.detail, headers)


async def handle_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = _clean_validation_errors(list(exc.errors()))
    if any(e["type"] == "json_invalid" for e in errors):
        return error_response(ErrorCode.INVALID_JSON, "request body is not valid JSON", {"errors": errors})
    detail: dict[str, Any] = {"errors": errors}
    index = _item_index(errors)
    if index is not None:
        detail["index"] = index
    return error_response(ErrorCode.VALIDATION_ERROR, "request does not match the schema", detail)


def _item_index(errors: list[dict[str, Any]]) -> int | None:
    """The batch item the first error is about: loc ["body", "inputs", 3, "image"] -> 3 (None if not in a list)."""
    if not errors:
        return None
    loc = [part for part in errors[0]["loc"] if part != "body"]
    # loc[1] is the position in a list field; after a union member's tag (list[...]) it is loc[2]
    return next((int(part) for part in loc[1:3] if part.isdigit()), None)


def allowed_methods(request: Request) -> str:
    """Every documented method on this path (Starlette names only the first matching route's)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        pattern = "".join(
            "[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^/]+\})", template)
        )
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    return ", ".join(sorted(methods))


async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Starlette raises only statuses that have a generic code (404, 405, 400 for a broken multipart body);
    # any other would be answered with the generic code of its class (400 or 500).
    code = ErrorCode.for_http_status(exc.status_code)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return error_response(code, str(exc.detail), headers=headers or None)


async def handle_client_disconnect(request: Request, _: ClientDisconnect) -> JSONResponse:
    # The client went away while sending its body (a timeout, a stopped load test): nobody reads this
    # reply and nothing broke here, so no traceback and no 500 in the metrics; 499 as nginx logs it.
    log.info("client disconnected before sending its whole request: %s %s", request.method, request.url.path)
    return error_response(
        ErrorCode.CLIENT_CLOSED_REQUEST, "client closed the connection before the request was complete"
    )


async def handle_unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Never leak exception text to clients; the log has the traceback.
    log.exception("unhandled error", exc_info=exc)
    return error_response(ErrorCode.INTERNAL_ERROR, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, handle_service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, handle_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, handle_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, handle_client_disconnect)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, handle_unexpected)
