"""WebSocket /stream/surprise: frames go in as they come, a surprise score per frame comes out.

    GET /stream/surprise?model=demo&threshold=3     (Authorization: Bearer <key> with the `read` scope)

The server first sends {"type": "ready", ...} (the model, its clip length, action and proprio sizes and
calibration). Then the client sends, per frame, either a text message {"frame": "<base64 PNG/JPEG>", "action":
[..], "proprio": [..]} or a binary message holding the encoded image, preceded by a text message {"action": [..],
"proprio": [..]} when either is due. The action is the one taken between the previous frame and this one; it is
required once the model has a state (a clip model needs frames_per_clip frames first) and ignored before.
`proprio` is V-JEPA 2-AC's end-effector state at this frame, required with every frame of such a model (and
refused by others); its frames are scored as POST /surprise scores them. Each frame is answered, in order, with
{"type": "score", "step", "score", "distance", "surprising"} (score null while there is nothing to compare).

Bounded: at most `stream_buffer_frames` frames wait per connection; when they are full the server stops
reading, so the socket's TCP window pushes back on the client instead of memory growing. Bad input closes the
connection after an {"type": "error", "error": {code, message, detail}} message, with a close code that says
why: 1007 unreadable data (bad JSON, image, base64 or action), 1003 a message that is neither, 1009 a message
above stream_max_message_bytes, 1008 policy (auth, unknown model, no surprise calibration, stream_max_steps
reached, a `threshold` that is not a finite number), 1013 overloaded, not ready or stream_max_connections open (try
again later), 1001 idle for stream_idle_timeout_s, 1011 a server error (a bug: the log has it).

A client that stops reading is closed too: a score that cannot be sent for stream_idle_timeout_s (the client's
socket is full) ends the stream and frees its slot (the server's WebSocket protocol then drops the connection,
service/connections.py). The server sends no pings of its own: these two timers find every peer that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from service.api.schemas import SurpriseCalibration
from service.config import StreamConfig
from service.errors import (
    ErrorCode,
    InvalidInput,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    UnprocessableInput,
    error_body,
)
from service.media.payload import RawImage, b64decode, decode_frames
from service.model_pool import ServedModel
from service.state import Services
from service.world import FrameStream

log = logging.getLogger(__name__)
router = APIRouter(tags=["world"])

GOING_AWAY, UNSUPPORTED_DATA, INVALID_DATA, POLICY, TOO_BIG, SERVER_ERROR, TRY_LATER = (
    1001, 1003, 1007, 1008, 1009, 1011, 1013)


def close_code(error: ServiceError) -> int:
    """The WebSocket close code for an error of the table (by its HTTP status)."""
    status = error.status
    if status == 413:
        return TOO_BIG
    if status in (415,):
        return UNSUPPORTED_DATA
    if status < 500 and status not in (401, 403, 404, 429):
        return INVALID_DATA
    if status in (429, 503):
        return TRY_LATER
    return POLICY if status < 500 else SERVER_ERROR


CONDITIONS = ("action", "proprio")  # the numbers a client sends with a frame (or in a message before it)


@dataclass(frozen=True)
class Frame:
    data: bytes  # the encoded image
    action: list[float] | None
    proprio: list[float] | None = None


@dataclass(frozen=True)
class Refusal:
    """Something the reader could not accept; the worker closes with it after the frames before it are scored."""

    error: ServiceError
    code: int


async def read_messages(
    receive: Callable[[], Awaitable[dict[str, Any]]], inbox: asyncio.Queue, limits: StreamConfig
) -> None:
    """Client messages -> Frames in the inbox, in order; ends with None (client gone) or a Refusal.

    `inbox.put` waits while the inbox is full, and while it waits nothing more is read: that is the backpressure."""
    pending: dict[str, list[float]] = {}
    while True:
        try:
            message = await asyncio.wait_for(receive(), limits.idle_timeout_s)
        except TimeoutError:
            await inbox.put(Refusal(InvalidInput(f"no message for {limits.idle_timeout_s:g} s"), GOING_AWAY))
            return
        if message["type"] == "websocket.disconnect":
            await inbox.put(None)
            return
        try:
            frame, pending = parse_message(message, pending, limits)
        except ServiceError as exc:
            await inbox.put(Refusal(exc, close_code(exc)))
            return
        if frame is not None:
            await inbox.put(frame)


def parse_message(message: dict[str, Any], pending: dict[str, list[float]],
                  limits: StreamConfig) -> tuple[Frame | None, dict[str, list[float]]]:
    """One WebSocket message -> (a frame or None, the action and proprio waiting for the next binary frame)."""
    limit = limits.max_message_bytes
    data, text = message.get("bytes"), message.get("text")
    if data is not None:
        if len(data) > limit:
            raise message_too_big(len(data), limit)
        return Frame(data, pending.get("action"), pending.get("proprio")), {}
    if text is None:
        raise InvalidInput("empty message")
    if len(text) > limit:
        raise message_too_big(len(text), limit)
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise InvalidInput("a text message must be JSON", code=ErrorCode.INVALID_JSON) from exc
    if not isinstance(body, dict) or not set(body) <= {"frame", *CONDITIONS} or not body:
        raise InvalidInput('a text message is {"frame": "<base64>", "action": [...], "proprio": [...]} or '
                           '{"action": [...], "proprio": [...]}')
    conditions = _conditions(body)
    if "frame" not in body:
        return None, {**pending, **conditions}
    if not isinstance(body["frame"], str):
        raise InvalidInput("'frame' must be a base64 string", code=ErrorCode.INVALID_BASE64)
    return Frame(b64decode(body["frame"], limits.max_frame_bytes), conditions.get("action"),
                 conditions.get("proprio")), {}


def _conditions(body: dict[str, Any]) -> dict[str, list[float]]:
    """The action and proprio of a text message, each a list of numbers when present."""
    def numbers(value: Any) -> bool:
        return value is None or isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)

    if not numbers(body.get("action")):
        raise UnprocessableInput("'action' must be a list of numbers", code=ErrorCode.INVALID_ACTION)
    if not numbers(body.get("proprio")):
        raise UnprocessableInput("'proprio' must be a list of numbers", code=ErrorCode.INVALID_PROPRIO)
    return {key: body[key] for key in CONDITIONS if body.get(key) is not None}


def message_too_big(size: int, limit: int) -> ServiceError:
    """The refusal of a message above stream_max_message_bytes (also said by the server's WebSocket protocol when it
    refuses one at its frame header, service/connections.py)."""
    return PayloadTooLarge(f"message of {size} bytes; the limit is {limit}", {"stream_max_message_bytes": limit})


def error_message(error: ServiceError) -> dict[str, Any]:
    """The message that precedes every refusal's close frame."""
    return {"type": "error", **error_body(error.code, error.message, error.detail)}


def close_reason(error: ServiceError) -> str:
    """The close frame's reason: the error's code and message, cut to fit (close reasons are <= 123 bytes)."""
    return f"{error.code.value}: {error.message}"[:120]


def parse_threshold(text: str | None) -> float | None:
    """`?threshold=`: a finite number (NaN or 1e400 would put NaN / Infinity, which are not JSON, in the ready
    message, and nothing could be flagged), or absent for the manifest's."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise UnprocessableInput(f"threshold must be a finite number; got {text[:40]!r}", {"threshold": text[:40]})
    return value


async def refuse(websocket: WebSocket, error: ServiceError, code: int, timeout_s: float | None = None) -> None:
    """The full error as a message, then the close code with a short reason; given up after timeout_s (a client
    that reads nothing cannot be told)."""
    async def tell() -> None:
        await websocket.send_json(error_message(error))
        await websocket.close(code, close_reason(error))

    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
        await asyncio.wait_for(tell(), timeout_s)


class ClientStalled(Exception):
    """The client read nothing for stream_idle_timeout_s: a send could not complete."""


async def send_in_time(websocket: WebSocket, message: dict[str, Any], timeout_s: float) -> None:
    """Send, or raise ClientStalled when the client's socket stays full for timeout_s (it stopped reading: the
    send waits for room that never comes, and the stream would hold its slot forever)."""
    try:
        await asyncio.wait_for(websocket.send_json(message), timeout_s)
    except TimeoutError as exc:
        raise ClientStalled(f"the client read nothing for {timeout_s:g} s") from exc
    except RuntimeError as exc:
        # the server's protocol closed the connection under the app (an oversized message it refused at the
        # frame header, service/connections.py): the client is gone for this stream, as after a disconnect
        raise WebSocketDisconnect(reason=str(exc)) from exc


async def score_frames(websocket: WebSocket, services: Services, model: ServedModel, stream: FrameStream,
                       inbox: asyncio.Queue) -> None:
    config = services.config.stream
    patience = config.idle_timeout_s
    while True:
        item = await inbox.get()
        if item is None:
            return
        if isinstance(item, Refusal):
            await refuse(websocket, item.error, item.code, patience)
            return
        if stream.steps >= config.max_steps:
            await refuse(websocket, InvalidInput(f"the stream reached stream_max_steps ({config.max_steps})"),
                         POLICY, patience)
            return
        try:
            frame = (await services.decode(decode_frames, RawImage(item.data), model.preprocess, services.media))[0]
            result = await stream.push(frame, item.action, item.proprio)
        except ServiceError as exc:
            await refuse(websocket, exc, close_code(exc), patience)
            return
        await send_in_time(websocket, {
            "type": "score", "step": result.step, "score": result.score, "distance": result.distance,
            "surprising": result.surprising,
        }, patience)


@router.websocket("/stream/surprise")
async def stream_surprise(websocket: WebSocket, model: str | None = None, threshold: str | None = None) -> None:
    """`threshold` is read as text and checked here: a query the framework refused would close the handshake with
    an HTTP 403 and an empty body; accepted, then refused, the client reads why (1008 and an error message)."""
    services: Services | None = getattr(websocket.app.state, "services", None)
    await websocket.accept()
    if services is None or not services.ready:
        await refuse(websocket, NotReady("service is not ready"), TRY_LATER)
        return
    try:
        limit = parse_threshold(threshold)
        served = services.models.resolve_model(model, services.config.models.default)
        stream = served.world.open_stream(limit)
    except ServiceError as exc:
        await refuse(websocket, exc, POLICY)
        return
    limit = services.config.stream.max_connections
    if not services.streams.enter(limit):
        await refuse(websocket, Overloaded(f"{services.streams.count} streams are open; the limit is {limit}"),
                     TRY_LATER)
        return
    services.metrics.open_streams.set(services.streams.own)
    try:
        await _serve_stream(websocket, services, served, stream)
    finally:
        services.streams.leave()
        services.metrics.open_streams.set(services.streams.own)


async def _serve_stream(websocket: WebSocket, services: Services, served: ServedModel, stream: FrameStream) -> None:
    ready = stream.ready
    limits = services.config.stream
    patience = limits.idle_timeout_s
    await send_in_time(websocket, {
        "type": "ready", "model": served.name, "space_id": served.manifest.space_id,
        "frames_per_clip": ready.frames_per_clip, "action_dim": ready.action_dim, "proprio_dim": ready.proprio_dim,
        "threshold": ready.threshold,
        "calibration": SurpriseCalibration.model_validate(ready.calibration, from_attributes=True).model_dump(),
        "buffer_frames": limits.buffer_frames,
    }, patience)
    inbox: asyncio.Queue = asyncio.Queue(maxsize=limits.buffer_frames)
    reader = asyncio.create_task(read_messages(websocket.receive, inbox, limits), name="stream-reader")
    try:
        await score_frames(websocket, services, served, stream, inbox)
    except WebSocketDisconnect:
        pass
    except ClientStalled as exc:
        log.info("closing a stream: %s", exc)  # nothing can be sent to it: its slot is freed on return
    except Exception:
        log.exception("surprise stream failed")
        await refuse(websocket, ServiceError("internal error"), SERVER_ERROR, patience)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await reader
