"""Front side: one connection to the core, shared by every request of the front.

`call` sends a request and awaits its answer; `call_blocking` does the same from a worker thread (the storage
threads, whose store and collection methods are synchronous); `notify` sends without waiting. The core's state
(phase, models, collections' recovery) arrives as notifications and is handed to `on_state`.

A request whose caller goes away (a client disconnect cancels the handler) is cancelled in the core too, but its
entry stays until the core answers: the arena blocks it references are released only then, because the core may
still be reading them. When the connection drops, every waiting caller gets 503 `not_ready`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.errors import NotReady
from service.ipc.wire import Outbox, RemoteError, encode, read_message

log = logging.getLogger(__name__)

NOTIFY = 0  # the request id of a message that gets no answer


class CoreGone(NotReady):
    pass


class CoreLink:
    def __init__(self, path: Path, on_state: Callable[[dict[str, Any]], None]) -> None:
        self.path = path
        self.on_state = on_state
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], Callable[[], None] | None]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._outbox: Outbox | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self.closed.is_set()

    async def connect(self, hello: dict[str, Any], timeout_s: float,
                      core_alive: Callable[[], bool] = lambda: True) -> dict[str, Any]:
        """Connect (the core may not listen yet: retried until `timeout_s`, or until `core_alive` says the core
        exited, which a failed start-up does before any front connects), introduce this front, and return the
        core's answer to the introduction."""
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        wait_s = 0.02
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not core_alive():
                    raise CoreGone("the core process exited before this front connected") from None
                if time.monotonic() > deadline:
                    raise CoreGone(f"the core process did not listen on {self.path} within {timeout_s:.0f} s") from None
                await asyncio.sleep(wait_s)  # a retry interval while the core starts, not a synchronisation
                wait_s = min(wait_s * 2, 0.5)
        writer.write(encode((NOTIFY, "hello", hello)))
        _, kind, answer = await read_message(reader)
        if kind != "hello":
            raise ConnectionError(f"the core answered the introduction with {kind!r}")
        self._writer = writer
        self._outbox = Outbox(writer)
        self._reader_task = asyncio.create_task(self._read(reader), name="core-link")
        return answer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, kind, value = await read_message(reader)
                if request_id == NOTIFY:
                    if kind == "state":
                        self.on_state(value)
                    continue
                entry = self._pending.pop(request_id, None)
                if entry is None:
                    continue
                future, release = entry
                if release is not None:
                    release()
                if future.done():
                    continue
                if kind == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(value.exception() if isinstance(value, RemoteError) else RuntimeError(value))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if not self._closing:
                log.error("the connection to the core process was lost (%s)", type(exc).__name__)
        finally:
            self._fail_all()

    def _fail_all(self) -> None:
        self.closed.set()
        pending, self._pending = self._pending, {}
        for future, release in pending.values():
            if release is not None:
                release()
            if not future.done():
                future.set_exception(CoreGone("the core process is gone; the server is restarting or stopping"))

    def notify(self, kind: str, *args: Any) -> None:
        if self.connected:
            assert self._outbox is not None
            self._outbox.put((NOTIFY, kind, args))

    async def call(self, kind: str, *args: Any, release: Callable[[], None] | None = None) -> Any:
        """Ask the core; `release` runs when the core has answered (or the link is lost), whatever the caller does."""
        if not self.connected:
            if release is not None:
                release()
            raise CoreGone("not connected to the core process")
        assert self._outbox is not None
        assert self._loop is not None
        request_id = next(self._ids)
        future = self._loop.create_future()
        self._pending[request_id] = (future, release)
        self._outbox.put((request_id, kind, args))
        try:
            return await future
        except asyncio.CancelledError:
            self.notify("cancel", request_id)
            raise

    def call_blocking(self, kind: str, *args: Any) -> Any:
        """`call` from a thread that is not the event loop's (a storage thread)."""
        if not self.connected or self._loop is None or self._loop.is_closed():
            raise CoreGone("not connected to the core process")
        return asyncio.run_coroutine_threadsafe(self.call(kind, *args), self._loop).result()

    async def aclose(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._fail_all()
