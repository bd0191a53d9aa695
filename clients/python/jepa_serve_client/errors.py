"""One exception type per error code of jepa-serve, each carrying the server's message and detail.

Every error body is `{"error": {"code", "message", "detail"}}`. A code this client does not know yet
becomes the class of its HTTP status (`NotFound`, `UnprocessableEntity`, ...), so `except NotFound`
still works against a newer server.

Failures with no answer from the server are `TransportError`s: `APIConnectionError` (refused, reset, DNS, TLS),
its subclass `APITimeoutError`, and `UnexpectedResponse` (an answer that is not jepa-serve's JSON, e.g. a proxy's
HTML page). So `except JepaServeError` catches everything the client raises about a call.
"""

from __future__ import annotations

from typing import Any


class JepaServeError(Exception):
    """Any error answer. `status` (HTTP), `code`, `message`, `detail` (dict; `detail["index"]` names the bad item
    of a batch), `retry_after` (seconds, when the server said)."""

    status = 0
    code = "error"

    def __init__(self, message: str, *, status: int = 0, code: str | None = None, detail: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or type(self).status
        self.code = code or type(self).code
        self.detail = detail or {}
        self.retry_after = retry_after

    @property
    def index(self) -> int | None:
        """The position of the offending input in the request's batch, when the server named one."""
        index = self.detail.get("index")
        return int(index) if index is not None else None

    def __str__(self) -> str:
        where = f" (item {self.index})" if self.index is not None else ""
        return f"{self.status} {self.code}: {self.message}{where}"


class TransportError(JepaServeError):
    """No usable answer from the server. `sent` is False when the request surely never reached it (the connection
    was refused or could not be opened): only those are retried (RetryPolicy.retry_connect)."""

    code = "transport_error"

    def __init__(self, message: str, *, sent: bool = True, status: int = 0) -> None:
        super().__init__(message, status=status)
        self.sent = sent

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class APIConnectionError(TransportError): code = "connection_error"
class APITimeoutError(APIConnectionError): code = "timeout"
class UnexpectedResponse(TransportError): code = "unexpected_response"


# One class per HTTP status: the parents of the per-code classes.
class BadRequest(JepaServeError): status, code = 400, "bad_request"
class Unauthorized(JepaServeError): status, code = 401, "unauthorized"
class Forbidden(JepaServeError): status, code = 403, "forbidden"
class NotFound(JepaServeError): status, code = 404, "not_found"
class MethodNotAllowed(JepaServeError): status, code = 405, "method_not_allowed"
class RequestTimeout(JepaServeError): status, code = 408, "request_timeout"
class Conflict(JepaServeError): status, code = 409, "conflict"
class PayloadTooLarge(JepaServeError): status, code = 413, "payload_too_large"
class UnsupportedMediaType(JepaServeError): status, code = 415, "unsupported_media_type"
class UnprocessableEntity(JepaServeError): status, code = 422, "validation_error"
class Overloaded(JepaServeError): status, code = 429, "overloaded"
class ServerError(JepaServeError): status, code = 500, "internal_error"
class ServiceUnavailable(JepaServeError): status, code = 503, "not_ready"
class DeadlineExceeded(JepaServeError): status, code = 504, "deadline_exceeded"
class StorageError(JepaServeError): status, code = 507, "storage_error"
class ClientClosedRequest(JepaServeError): status, code = 499, "client_closed_request"


# One class per code the server sends.
class InvalidJson(BadRequest): code = "invalid_json"
class InvalidInput(BadRequest): code = "invalid_input"
class InvalidBase64(BadRequest): code = "invalid_base64"
class InvalidImage(BadRequest): code = "invalid_image"
class InvalidVideo(BadRequest): code = "invalid_video"
class InvalidTimeout(BadRequest): code = "invalid_timeout"
class InvalidTensorBytes(BadRequest): code = "invalid_tensor_bytes"
class InvalidCollectionName(BadRequest): code = "invalid_collection_name"
class ModelNotFound(NotFound): code = "model_not_found"
class CollectionNotFound(NotFound): code = "collection_not_found"
class PointNotFound(NotFound): code = "point_not_found"
class HeadNotFound(NotFound): code = "head_not_found"
class MediaNotFound(NotFound): code = "media_not_found"
class SpaceMismatch(Conflict): code = "space_mismatch"
class CollectionExists(Conflict): code = "collection_exists"
class TooManyItems(PayloadTooLarge): code = "too_many_items"
class TooManySteps(PayloadTooLarge): code = "too_many_steps"
class MetadataTooLarge(PayloadTooLarge): code = "metadata_too_large"
class VideoTooLong(PayloadTooLarge): code = "video_too_long"
class VideoTooLarge(PayloadTooLarge): code = "video_too_large"
class UnsupportedImageFormat(UnsupportedMediaType): code = "unsupported_image_format"
class ValidationError(UnprocessableEntity): code = "validation_error"
class DimensionMismatch(UnprocessableEntity): code = "dimension_mismatch"
class InvalidVector(UnprocessableEntity): code = "invalid_vector"
class InvalidTensor(UnprocessableEntity): code = "invalid_tensor"
class InvalidAction(UnprocessableEntity): code = "invalid_action"
class InvalidProprio(UnprocessableEntity): code = "invalid_proprio"
class InvalidPlan(UnprocessableEntity): code = "invalid_plan"
class InvalidContext(UnprocessableEntity): code = "invalid_context"
class InvalidSampling(UnprocessableEntity): code = "invalid_sampling"
class InvalidIndex(UnprocessableEntity): code = "invalid_index"
class InvalidClip(UnprocessableEntity): code = "invalid_clip"
class InvalidFilter(UnprocessableEntity): code = "invalid_filter"
class InvalidLabel(UnprocessableEntity): code = "invalid_label"
class KTooLarge(UnprocessableEntity): code = "k_too_large"
class NoPredictor(UnprocessableEntity): code = "no_predictor"
class NoSurprise(UnprocessableEntity): code = "no_surprise"
class NoModelForCollection(UnprocessableEntity): code = "no_model_for_collection"
class NoFramesOutput(UnprocessableEntity): code = "no_frames_output"
class NoTokensOutput(UnprocessableEntity): code = "no_tokens_output"
class VideoUnsupported(UnprocessableEntity): code = "video_unsupported"
class RateLimited(Overloaded): code = "rate_limited"
class NotReady(ServiceUnavailable): code = "not_ready"
class StorageUnavailable(ServiceUnavailable): code = "storage_unavailable"
class TooManyConnections(ServiceUnavailable): code = "too_many_connections"
class InferenceFailed(ServerError): code = "inference_failed"


def _leaves(base: type[JepaServeError]) -> list[type[JepaServeError]]:
    found = []
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(_leaves(sub))
    return found


# The server's codes only: the transport errors are raised by this client, never sent.
BY_STATUS: dict[int, type[JepaServeError]] = {
    c.status: c for c in JepaServeError.__subclasses__() if not issubclass(c, TransportError)}
# A per-code class wins over its status class of the same code (validation_error -> ValidationError).
BY_CODE: dict[str, type[JepaServeError]] = {}
for _cls in _leaves(JepaServeError):
    if issubclass(_cls, TransportError):
        continue
    if _cls.code not in BY_CODE or _cls.__bases__[0] is not JepaServeError:
        BY_CODE[_cls.code] = _cls


def error_from_body(body: Any) -> JepaServeError:
    """The exception for an error body without an HTTP status (a /stream/surprise error message): by its code."""
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    cls = BY_CODE.get(code, JepaServeError)
    return error_from_response(cls.status, body)


def error_from_response(status: int, body: Any, retry_after: float | None = None) -> JepaServeError:
    """The exception for an error answer: by its code, else by its status."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        cls = BY_STATUS.get(status, ServerError if status >= 500 else JepaServeError)
        return cls(f"HTTP {status}", status=status, retry_after=retry_after)
    code = str(error.get("code", ""))
    cls = BY_CODE.get(code)
    if cls is None or cls.status != status:
        cls = BY_STATUS.get(status, ServerError if status >= 500 else JepaServeError)
    return cls(str(error.get("message", "")), status=status, code=code or None, detail=error.get("detail") or {},
               retry_after=retry_after)
