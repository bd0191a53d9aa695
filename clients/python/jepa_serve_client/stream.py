"""The WebSocket /stream/surprise: frames go in as they come, a `StreamScore` per frame comes out.

Protocol (the server's service/api/stream.py): the server first sends {"type": "ready", ...} (model, clip length,
action and proprio sizes, threshold, buffer_frames); then per frame the client sends a text message {"action":
[...], "proprio": [...]} when either is due, followed by the encoded image as a binary message, and the server
answers in order with {"type": "score", "step", "score", "distance", "surprising"}. A refused frame is answered
with {"type": "error", "error": {...}} and the connection is closed: raised here as the error code's exception.

`SurpriseStream` (sync, websockets' threaded client) and `AsyncSurpriseStream` (asyncio) share the message
building and parsing below.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from jepa_serve_client.errors import (
    BY_CODE,
    BY_STATUS,
    APIConnectionError,
    APITimeoutError,
    JepaServeError,
    TransportError,
    UnexpectedResponse,
    error_from_body,
)
from jepa_serve_client.results import StreamScore

Frame = str | os.PathLike | bytes  # an encoded image (PNG, JPEG, ...), or its path
PATH = "/stream/surprise"


def stream_url(base_url: str, model: str | None, threshold: float | None) -> str:
    """http(s)://host[:port][/prefix] -> ws(s)://host[:port][/prefix]/stream/surprise?model=&threshold="""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = urlencode({k: v for k, v in (("model", model), ("threshold", threshold)) if v is not None})
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + PATH, query, ""))


def frame_messages(frame: Frame, action: Any = None, proprio: Any = None) -> list[str | bytes]:
    """One frame as the messages that send it: the conditions as text (when any), then the image bytes."""
    if isinstance(frame, np.ndarray):
        raise TypeError("send frames as encoded images (PNG, JPEG bytes or a path), not pixel arrays")
    data = frame if isinstance(frame, bytes) else Path(frame).read_bytes()
    conditions = {key: np.asarray(value, dtype=np.float64).ravel().tolist()
                  for key, value in (("action", action), ("proprio", proprio)) if value is not None}
    return [json.dumps(conditions), data] if conditions else [data]


def parse_answer(message: str | bytes) -> StreamScore:
    """A server message -> StreamScore, or the error it carries raised."""
    try:
        body = json.loads(message)
    except ValueError:
        raise UnexpectedResponse(f"the stream sent a message that is not JSON: {message[:80]!r}") from None
    kind = body.get("type") if isinstance(body, dict) else None
    if kind == "score":
        return StreamScore(step=body["step"], score=body["score"], distance=body["distance"],
                           surprising=bool(body["surprising"]))
    if kind == "error":
        raise error_from_body(body)
    raise UnexpectedResponse(f"the stream sent a message of type {kind!r} where a score was due")


def parse_ready(message: str | bytes) -> dict[str, Any]:
    try:
        body = json.loads(message)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("type") == "error":
        raise error_from_body(body)
    if not isinstance(body, dict) or body.get("type") != "ready":
        raise UnexpectedResponse(f'the stream\'s first message is not {{"type": "ready"}}: {str(message)[:80]!r}')
    return body


def closed_error(exc: ConnectionClosed) -> JepaServeError:
    """A close with no error message before it: its reason is "<code>: <message>" when the server gave one."""
    frame = exc.rcvd
    reason = frame.reason if frame is not None else ""
    code, _, message = reason.partition(": ")
    cls = BY_CODE.get(code)
    if cls is not None:
        return cls(message, status=cls.status, code=code)
    status = frame.code if frame is not None else "none"
    return APIConnectionError(f"the stream was closed (close code {status}) {reason}".strip())


def handshake_error(exc: Exception, url: str) -> JepaServeError:
    """A WebSocket that could not be opened, as the client's error: refused connection, timeout, or an HTTP status
    (the server refuses a key before accepting, so 403 may mean a missing key, a wrong one or a wrong scope)."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        cls = BY_STATUS.get(status, JepaServeError)
        return cls(f"the server refused the WebSocket {url} with HTTP {status}"
                   + (" (a missing or wrong API key, a key without the read scope, or a rate limit)"
                      if status == 403 else ""), status=status)
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"opening {url} timed out", sent=False)
    if isinstance(exc, InvalidHandshake):
        return UnexpectedResponse(f"{url} is not a WebSocket endpoint: {exc}")
    return APIConnectionError(f"cannot connect to {url}: {exc}", sent=False)


def _conditions(n: int, actions: Any, proprio: Any) -> tuple[list[Any], list[Any]]:
    """Per frame, its action (actions[i - 1] leads to frame i; none for the first) and proprio."""
    acts: list[Any] = [None] * n
    if actions is not None:
        actions = list(actions)
        if len(actions) not in (n - 1, n):
            raise ValueError(f"{n} frames take {n - 1} actions (one between each two); got {len(actions)}")
        acts = [None, *actions] if len(actions) == n - 1 else actions
    poses = [None] * n if proprio is None else list(proprio)
    if len(poses) != n:
        raise ValueError(f"{n} frames take {n} proprio states; got {len(poses)}")
    return acts, poses


class SurpriseStream:
    """A blocking /stream/surprise connection: `send(frame, action)` -> StreamScore, or `scores(frames, actions)`,
    which keeps up to the server's buffer of frames in flight. `ready` is the server's first message."""

    def __init__(self, url: str, headers: dict[str, str], timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        try:
            self._ws: ClientConnection = connect(url, additional_headers=headers, open_timeout=timeout_s,
                                                 max_size=None, user_agent_header=headers.get("user-agent"))
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise handshake_error(exc, url) from exc
        self.ready = parse_ready(self._receive())

    def _receive(self) -> str | bytes:
        try:
            return self._ws.recv(timeout=self.timeout_s)
        except TimeoutError:
            raise APITimeoutError(f"no answer from {self.url} in {self.timeout_s:g} s") from None
        except ConnectionClosed as exc:
            raise closed_error(exc) from exc

    def push(self, frame: Frame, action: Any = None, proprio: Any = None) -> None:
        """Send one frame (with the action that led to it) without waiting for its score."""
        try:
            for message in frame_messages(frame, action, proprio):
                self._ws.send(message)
        except ConnectionClosed as exc:  # refused earlier: the error message is waiting to be read
            raise self._pending_error(exc) from exc

    def _pending_error(self, exc: ConnectionClosed) -> JepaServeError:
        try:
            while True:
                parse_answer(self._ws.recv(timeout=self.timeout_s))
        except JepaServeError as error:
            return error
        except (ConnectionClosed, TimeoutError):
            return closed_error(exc)

    def receive(self) -> StreamScore:
        """The next frame's score, in the order the frames were sent."""
        return parse_answer(self._receive())

    def send(self, frame: Frame, action: Any = None, proprio: Any = None) -> StreamScore:
        """Send one frame and wait for its score."""
        self.push(frame, action, proprio)
        return self.receive()

    def scores(self, frames: Iterable[Frame], actions: Sequence[Any] | None = None,
               proprio: Sequence[Any] | None = None) -> Iterator[StreamScore]:
        """Score a sequence (actions as /surprise takes them: one between each two frames), pipelined."""
        frames = list(frames)
        acts, poses = _conditions(len(frames), actions, proprio)
        window, pending = max(1, int(self.ready.get("buffer_frames", 1))), 0
        for frame, action, pose in zip(frames, acts, poses, strict=True):
            self.push(frame, action, pose)
            pending += 1
            if pending >= window:
                yield self.receive()
                pending -= 1
        for _ in range(pending):
            yield self.receive()

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> SurpriseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSurpriseStream:
    """The asyncio twin of SurpriseStream: `async with client.stream_surprise() as stream` (or `await` it)."""

    def __init__(self, url: str, headers: dict[str, str], timeout_s: float) -> None:
        self.url, self.timeout_s, self._headers = url, timeout_s, headers
        self._ws: AsyncConnection | None = None
        self.ready: dict[str, Any] = {}

    async def open(self) -> AsyncSurpriseStream:
        try:
            self._ws = await async_connect(self.url, additional_headers=self._headers, open_timeout=self.timeout_s,
                                           max_size=None, user_agent_header=self._headers.get("user-agent"))
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise handshake_error(exc, self.url) from exc
        self.ready = parse_ready(await self._receive())
        return self

    def __await__(self):
        return self.open().__await__()

    async def __aenter__(self) -> AsyncSurpriseStream:
        return self if self._ws is not None else await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def _socket(self) -> AsyncConnection:
        if self._ws is None:
            raise TransportError("the stream is not open: `await` it or use `async with`")
        return self._ws

    async def _receive(self) -> str | bytes:
        try:
            return await asyncio.wait_for(self._socket.recv(), self.timeout_s)
        except TimeoutError:
            raise APITimeoutError(f"no answer from {self.url} in {self.timeout_s:g} s") from None
        except ConnectionClosed as exc:
            raise closed_error(exc) from exc

    async def push(self, frame: Frame, action: Any = None, proprio: Any = None) -> None:
        try:
            for message in frame_messages(frame, action, proprio):
                await self._socket.send(message)
        except ConnectionClosed as exc:
            raise await self._pending_error(exc) from exc

    async def _pending_error(self, exc: ConnectionClosed) -> JepaServeError:
        try:
            while True:
                parse_answer(await self._receive())
        except JepaServeError as error:
            return error

    async def receive(self) -> StreamScore:
        return parse_answer(await self._receive())

    async def send(self, frame: Frame, action: Any = None, proprio: Any = None) -> StreamScore:
        await self.push(frame, action, proprio)
        return await self.receive()

    async def scores(self, frames: Iterable[Frame], actions: Sequence[Any] | None = None,
                     proprio: Sequence[Any] | None = None) -> AsyncIterator[StreamScore]:
        frames = list(frames)
        acts, poses = _conditions(len(frames), actions, proprio)
        window, pending = max(1, int(self.ready.get("buffer_frames", 1))), 0
        for frame, action, pose in zip(frames, acts, poses, strict=True):
            await self.push(frame, action, pose)
            pending += 1
            if pending >= window:
                yield await self.receive()
                pending -= 1
        for _ in range(pending):
            yield await self.receive()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
