"""Domain errors and their one mapping to HTTP statuses.

Domain code raises these; only service/api/errors.py turns them into responses.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, detail: dict[str, Any] | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}
        if code is not None:
            self.code = code


class InvalidInput(ServiceError):
    status = 400
    code = "invalid_input"


class UnprocessableInput(ServiceError):
    status = 422
    code = "validation_error"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Overloaded(ServiceError):
    status = 429
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message, detail)
        self.retry_after_s = retry_after_s


class NotReady(ServiceError):
    status = 503
    code = "not_ready"


class DeadlineExceeded(ServiceError):
    status = 504
    code = "deadline_exceeded"


class StorageUnavailable(ServiceError):
    """The shared store (Redis) cannot be reached: nothing was written; retry later."""

    status = 503
    code = "storage_unavailable"
    retry_after_s = 1.0


class StorageError(ServiceError):
    """A write could not be made durable; nothing was applied."""

    status = 507
    code = "storage_error"


class Unauthorized(ServiceError):
    """No API key, or one that matches no configured key (401 with `WWW-Authenticate: Bearer`)."""

    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """A valid key without the scope the route needs."""

    status = 403
    code = "forbidden"


class RateLimited(Overloaded):
    """The caller's key used up its requests for this window (429 + `Retry-After`)."""

    code = "rate_limited"


class RequestTimeout(ServiceError):
    """The request's headers did not arrive within the header timeout (service/connections.py)."""

    status = 408
    code = "request_timeout"


class TooManyConnections(ServiceError):
    """The process holds its maximum of open connections; a new one is answered and closed (with `Retry-After`)."""

    status = 503
    code = "too_many_connections"
    retry_after_s = 1.0
