"""Connection hygiene for a server that may face clients directly: read timeouts and a connection cap.

uvicorn closes an idle keep-alive connection (`timeout_keep_alive`) but sets no timer on a connection
that has sent nothing, part of its headers, or headers without the body they announce: an outside test
held 200 such connections open indefinitely (219 descriptors after 40 s). This protocol, uvicorn's
httptools protocol with timers added at its parser callbacks, closes them:

- headers: from the connection's start (or the first byte of a later request on a kept-alive one) the
  whole header block must arrive within `header_timeout_s`; a client that sent part of it gets 408,
  one that sent nothing is just closed;
- body: the body must keep coming; no byte for `body_timeout_s` closes the connection (the timer does
  not run while the server itself has paused reading, when the app is slower than the client);
- connections: past `max_connections` open at once, a new connection is answered 503 and closed at once,
  so descriptors stay bounded whatever the clients do;
- an early answer (413 for a body over the limit, 401, ...) given while the body is still coming: the
  rest of the body is read and thrown away, up to `discard_body_bytes`, before the connection closes.
  Closing at once (uvicorn's way when the client sent `Connection: close`, as urllib does) resets the
  connection under a client that sends its whole body before reading, and it sees a broken pipe
  instead of the 413 (nginx's lingering close does the same reading).

WebSockets (/stream/surprise) get uvicorn's sans-I/O WebSocket protocol with two additions:

- a client that stops reading: when the socket stays full (asyncio paused our writing) for `stall_timeout_s`,
  the connection is dropped. A graceful close cannot finish there (the close frame waits behind the unread
  data), and uvicorn's own ping timeout closed nothing for that reason: an outside test held every stream slot
  with two clients that never read;
- a message above `max_message_bytes`, refused by the WebSocket library at its frame header (it is never read
  into memory), is refused in the app's words: the stream's error message, then 1009 with the limit; and the
  rest of the message is read and dropped for up to `linger_s`, so the client, still sending, reads the
  refusal instead of a reset (as the HTTP side drains an early-answered body).

These classes subclass uvicorn's and use some of its internals (`cycle`, `flow.read_paused`, `_should_upgrade`,
the sans-I/O protocol's `conn`, `queue`, `close_sent` and `close_timer`): pyproject pins uvicorn to the versions this
was tested with, and tests/e2e/test_connections.py (with tests/e2e/test_stream.py for the WebSocket half) is the
gate for raising that pin.

nginx in front (deploy/) enforces its own client_header_timeout / client_body_timeout / keepalive and
buffers slow clients, so behind it these timers rarely fire; they matter for a replica exposed directly.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Close, Frame, Opcode

from service.errors import RequestTimeout, ServiceError, TooManyConnections, error_body
from service.ipc.counters import Gate, LocalGate

log = logging.getLogger(__name__)

MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    discard_body_bytes: int
    # the open HTTP connections counted against max_connections: this process's, or every front's (SharedGate)
    gate: Gate = field(default_factory=LocalGate)


@dataclass(frozen=True, kw_only=True)
class WebSocketLimits:
    stall_timeout_s: float  # the socket full (the client reads nothing) this long: the connection is dropped
    max_message_bytes: int  # what uvicorn's `ws_max_size` is set to (cli.py); the app checks the same limit
    # the app's refusal of a message of `size` bytes: its error message (JSON) and close reason
    too_big: Callable[[int], tuple[dict[str, Any], str]]
    linger_s: float = 5.0  # reading (and dropping) the rest of a refused message before closing


def _response(error: ServiceError, extra: tuple[str, ...] = ()) -> bytes:
    """The project's error shape, written straight to the socket (there is no request for the app to answer)."""
    body = json.dumps(error_body(error.code, error.message, error.detail)).encode()
    head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read timers, a connection cap and a lingering close (module docstring).
    uvicorn builds one per connection; `limits` is bound by `guarded_protocol`."""

    _timer: asyncio.TimerHandle | None = None
    _reading: str = "headers"  # what the timer waits for: "headers" or "body"
    _began = False  # some bytes of the current request have been parsed
    _body_done = False  # the current request's body has been received whole
    _close_when_drained = False  # the client asked for Connection: close
    _discarded = 0  # body bytes received after the answer was complete
    _upgraded = False  # handed to the WebSocket protocol: its own timeouts apply, not these
    _counted = False  # holds a place in limits.gate

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not self.limits.gate.enter(self.limits.max_connections):
            self._refuse_over_cap(transport)
            return
        self._counted = True
        self._arm("headers", self.limits.header_timeout_s)

    def _refuse_over_cap(self, transport: Any) -> None:
        log.warning("connection refused: %d open, the limit is %d", self.limits.gate.count,
                    self.limits.max_connections)
        refusal = TooManyConnections(f"this server holds at most {self.limits.max_connections} connections")
        transport.write(_response(refusal, (f"retry-after: {refusal.retry_after_s:.0f}",)))
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.limits.gate.leave()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began = True
        if self._timer is None:  # a later request on a kept-alive connection: its headers' clock starts now
            self._arm("headers", self.limits.header_timeout_s)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        self._upgraded = True
        self._uncount()  # a stream now: JEPA_STREAM_MAX_CONNECTIONS bounds it
        super().handle_websocket_upgrade()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            self._disarm()  # a WebSocket handshake: no body follows, and this protocol hands over
            return
        self._body_done, self._discarded = False, 0
        self._close_when_drained = self.cycle is not None and not self.cycle.keep_alive
        if self._close_when_drained:
            # uvicorn would close as soon as the answer is sent, with the body maybe still coming:
            # keep the connection until the body is drained (on_response_complete), then close it
            self.cycle.keep_alive = True
        self._arm("body", self.limits.body_timeout_s)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self.cycle is not None and self.cycle.response_complete:
            self._discarded += len(body)  # uvicorn drops it: the app has answered already
            if self._discarded > self.limits.discard_body_bytes:
                log.info("closing a connection: more than %d body bytes after the answer",
                         self.limits.discard_body_bytes)
                self.transport.close()
                return
        self._arm("body", self.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._began = False
        self._body_done = True
        if self._closing_done():
            self.transport.close()  # answered before the body ended; now it has

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._closing_done() and not self.transport.is_closing():
            self.transport.close()

    def _closing_done(self) -> bool:
        """A Connection: close request whose body is in and whose answer is out (with pipelining,
        self.cycle is the latest request: an earlier one's answer does not close the connection)."""
        return (self._close_when_drained and self._body_done and not self._upgraded
                and self.cycle is not None and self.cycle.response_complete)

    def _arm(self, reading: str, seconds: float) -> None:
        self._disarm()
        self._reading = reading
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _waiting_on_us(self) -> bool:
        """We stopped reading (the app is slower than the client), or the client waits for our 100 Continue,
        sent when the app first reads: the silence is ours, not the client's."""
        return self.flow.read_paused or getattr(self.cycle, "waiting_for_100_continue", False)

    def _expired(self) -> None:
        self._timer = None
        if self._upgraded or self.transport.is_closing():
            return
        if self._reading == "body":
            if self._waiting_on_us():
                self._arm("body", self.limits.body_timeout_s)
                return
            log.info("closing a connection: no request body byte for %.0f s", self.limits.body_timeout_s)
        elif self._began:
            log.info("closing a connection: request headers incomplete after %.0f s", self.limits.header_timeout_s)
            timeout = RequestTimeout(f"request headers not received within {self.limits.header_timeout_s} s")
            self.transport.write(_response(timeout))
        self.transport.close()


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol that drops a client which stops reading and refuses an oversized
    message in the app's words (module docstring). `limits` is bound by `guarded_websocket_protocol`."""

    _stall_timer: asyncio.TimerHandle | None = None
    _lost = False  # the connection has ended

    def __init__(self, *args: Any, limits: WebSocketLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.limits.stall_timeout_s, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_stall()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_stall()
        super().connection_lost(exc)

    async def run_asgi(self) -> None:
        try:
            await super().run_asgi()
        finally:
            # The app is done and uvicorn closes the transport, which first writes out what the client has not
            # read yet: a client that reads nothing would keep the connection and its descriptor forever (seen
            # under load, when the socket stopped filling before the app's last sends and no stall was armed).
            if not self._lost:
                self.loop.call_later(self.close_timeout + self.limits.stall_timeout_s, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self._lost:
            log.info("dropping a WebSocket connection: its close did not complete (the client reads nothing)")
            self.transport.abort()

    def _cancel_stall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _stalled(self) -> None:
        self._stall_timer = None
        log.info("dropping a WebSocket connection: the client read nothing for %.0f s", self.limits.stall_timeout_s)
        self.transport.abort()  # connection_lost follows: the app's pending send ends, its stream slot is freed

    def handle_parser_exception(self) -> None:
        closing = self.conn.close_sent
        if closing is None or closing.code != MESSAGE_TOO_BIG:
            super().handle_parser_exception()
            return
        if self.close_sent:
            return  # called again for every chunk of the refused message that still arrives: dropped
        self._refuse_too_big(getattr(self.conn.parser_exc, "size", None))

    def _refuse_too_big(self, size: int | None) -> None:
        """The library refused the message at its header and queued a 1009 close frame: send the app's error
        message before it, with the app's reason, and keep reading (the library drops what comes) a while."""
        message, reason = self.limits.too_big(size or self.limits.max_message_bytes + 1)
        self.conn.data_to_send()  # the library's close frame: replaced by ours below
        text = Frame(Opcode.TEXT, json.dumps(message).encode()).serialize(mask=False)
        close = Frame(Opcode.CLOSE, Close(MESSAGE_TOO_BIG, reason).serialize()).serialize(mask=False)
        self.queue.put_nowait({"type": "websocket.disconnect", "code": MESSAGE_TOO_BIG, "reason": reason})
        self.transport.write(text + close)
        self.close_sent = True
        if self.read_paused:  # the app may not read again: keep draining so the client's send can finish
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.limits.linger_s, self.transport.close)


def guarded_protocol(limits: ConnectionLimits) -> Callable[..., asyncio.Protocol]:
    """uvicorn's `http=` protocol factory with `limits` (uvicorn builds one instance per connection)."""
    return functools.partial(GuardedHttpToolsProtocol, limits=limits)


def guarded_websocket_protocol(limits: WebSocketLimits) -> Callable[..., asyncio.Protocol]:
    """uvicorn's `ws=` protocol factory with `limits`."""
    return functools.partial(GuardedWebSocketProtocol, limits=limits)
