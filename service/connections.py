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

nginx in front (deploy/) enforces its own client_header_timeout / client_body_timeout / keepalive and
buffers slow clients, so behind it these timers rarely fire; they matter for a replica exposed directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import RequestTimeout, ServiceError, TooManyConnections

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    discard_body_bytes: int


def _response(error: ServiceError, extra: tuple[str, ...] = ()) -> bytes:
    """The project's error shape, written straight to the socket (there is no request for the app to answer)."""
    body = json.dumps({"error": {"code": error.code, "message": error.message, "detail": error.detail}}).encode()
    head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's `http=` protocol class with `limits` (uvicorn builds one instance per connection)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _reading: str = "headers"  # what the timer waits for: "headers" or "body"
        _began = False  # some bytes of the current request have been parsed
        _body_done = False  # the current request's body has been received whole
        _close_when_drained = False  # the client asked for Connection: close
        _discarded = 0  # body bytes received after the answer was complete
        _upgraded = False  # handed to the WebSocket protocol: its own timeouts apply, not these

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                log.warning("connection refused: %d open, the limit is %d", len(self.connections) - 1,
                            limits.max_connections)
                refusal = TooManyConnections(f"this server holds at most {limits.max_connections} connections")
                transport.write(_response(refusal, (f"retry-after: {refusal.retry_after_s:.0f}",)))
                transport.close()
                return
            self._arm("headers", limits.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._began = True
            if self._timer is None:  # a later request on a kept-alive connection: its headers' clock starts now
                self._arm("headers", limits.header_timeout_s)

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            self._upgraded = True
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
            self._arm("body", limits.body_timeout_s)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            if self.cycle is not None and self.cycle.response_complete:
                self._discarded += len(body)  # uvicorn drops it: the app has answered already
                if self._discarded > limits.discard_body_bytes:
                    log.info("closing a connection: more than %d body bytes after the answer",
                             limits.discard_body_bytes)
                    self.transport.close()
                    return
            self._arm("body", limits.body_timeout_s)

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

        def _expired(self) -> None:
            self._timer = None
            if self._upgraded or self.transport.is_closing():
                return
            waiting_on_us = self.flow.read_paused or getattr(self.cycle, "waiting_for_100_continue", False)
            if self._reading == "body" and waiting_on_us:
                # we stopped reading (the app is slower than the client), or the client waits for our
                # 100 Continue, sent when the app first reads: the silence is ours, not the client's
                self._arm("body", limits.body_timeout_s)
                return
            if self._reading == "headers":
                if self._began:
                    log.info("closing a connection: request headers incomplete after %.0f s", limits.header_timeout_s)
                    timeout = RequestTimeout(f"request headers not received within {limits.header_timeout_s} s")
                    self.transport.write(_response(timeout))
            else:
                log.info("closing a connection: no request body byte for %.0f s", limits.body_timeout_s)
            self.transport.close()

    return GuardedHttpToolsProtocol
