"""Core side: accept the fronts' connections, answer their requests, tell them the core's state.

Each request runs as its own task, so a slow one (a batch, a write that waits for fsync) never holds up the
next message; its answer goes back on the connection it came from. The answer to a cancelled request is
still sent (a `not_ready` error): the front frees the arena blocks the request referenced only then.
When a front goes away, its requests are cancelled and the items it announced are withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import NotReady, ServiceError
from service.ipc.arena import ArenaView
from service.ipc.link import NOTIFY
from service.ipc.wire import ArrayRef, Outbox, RemoteError, read_message

log = logging.getLogger(__name__)

INTERNAL = RemoteError("ServiceError", "internal_error", "internal error in the core process", {}, None)


@dataclass(eq=False)
class FrontConnection:
    """One front, as the core sees it."""

    name: str
    writer: asyncio.StreamWriter
    outbox: Outbox
    arena: ArenaView | None = None
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    announced: Counter[tuple[str, str]] = field(default_factory=Counter)  # items announced, not yet sent

    def array(self, value: Any) -> Any:
        """An item's input: a view into this front's arena, or the array that came inside the message."""
        if isinstance(value, ArrayRef):
            if self.arena is None:
                raise ValueError("an array reference from a front without an arena")
            return self.arena.array(value)
        return value

    def send(self, message: Any) -> None:
        self.outbox.put(message)


Handler = Callable[..., Awaitable[Any]]
Notification = Callable[..., None]


class CoreServer:
    def __init__(self, path: Path, requests: dict[str, Handler], notifications: dict[str, Notification],
                 state: Callable[[], dict[str, Any]], on_disconnect: Callable[[FrontConnection], None]) -> None:
        self.path = path
        self.requests = requests
        self.notifications = notifications
        self.state = state
        self.on_disconnect = on_disconnect
        self.fronts: set[FrontConnection] = set()
        self._no_fronts = asyncio.Event()
        self._no_fronts.set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for front in list(self.fronts):
            front.writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def fronts_gone(self, timeout_s: float) -> None:
        """Wait until no front is connected (or `timeout_s` has passed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_fronts.wait(), timeout_s)

    def broadcast_state(self) -> None:
        message = (NOTIFY, "state", self.state())
        for front in self.fronts:
            front.send(message)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _, kind, hello = await read_message(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if kind != "hello":
            writer.close()
            return
        front = FrontConnection(str(hello.get("front", "?")), writer, Outbox(writer))
        if hello.get("arena") is not None:
            path, size = hello["arena"]
            front.arena = ArenaView(path, size)
        self.fronts.add(front)
        self._no_fronts.clear()
        front.send((NOTIFY, "hello", self.state()))
        log.info("front %s connected (arena: %s)", front.name,
                 f"{front.arena.size >> 20} MiB" if front.arena is not None else "none")
        try:
            await self._read(front, reader)
        finally:
            self._drop(front)

    async def _read(self, front: FrontConnection, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                request_id, kind, args = await read_message(reader)
                if request_id == NOTIFY:
                    self._notified(front, kind, args)
                    continue
                handler = self.requests.get(kind)
                if handler is None:
                    front.send((request_id, "error", RemoteError.of(NotReady(f"unknown request {kind!r}"))))
                    continue
                task = asyncio.create_task(self._answer(front, request_id, handler, args))
                front.tasks[request_id] = task

    def _notified(self, front: FrontConnection, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "cancel":
            task = front.tasks.get(args[0])
            if task is not None:
                task.cancel()
            return
        handler = self.notifications.get(kind)
        if handler is None:
            log.warning("front %s sent an unknown notification %r", front.name, kind)
            return
        try:
            handler(front, *args)
        except Exception:
            log.exception("notification %r from front %s failed", kind, front.name)

    async def _answer(self, front: FrontConnection, request_id: int, handler: Handler, args: tuple[Any, ...]) -> None:
        try:
            value = await handler(front, *args)
        except ServiceError as exc:
            front.send((request_id, "error", RemoteError.of(exc)))
        except asyncio.CancelledError:
            front.send((request_id, "error", RemoteError.of(NotReady("the request was cancelled"))))
        except Exception:
            log.exception("request %s from front %s failed", getattr(handler, "__name__", handler), front.name)
            front.send((request_id, "error", INTERNAL))
        else:
            front.send((request_id, "ok", value))
        finally:
            front.tasks.pop(request_id, None)

    def _drop(self, front: FrontConnection) -> None:
        self.fronts.discard(front)
        if not self.fronts:
            self._no_fronts.set()
        for task in list(front.tasks.values()):
            task.cancel()
        try:
            self.on_disconnect(front)
        finally:
            if front.arena is not None:
                front.arena.close()
            front.writer.close()
            log.info("front %s disconnected", front.name)
