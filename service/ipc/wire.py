"""Framing of the messages between a front and the core: a 4-byte length, then a pickle (protocol 5).

Both ends are processes of one server started by one supervisor, so pickle is safe here; the socket is a
Unix socket in a directory only the server's user can enter. Arrays in a message travel inside the pickle
(results, small inputs) or as `ArrayRef`s into the sender's shared-memory arena (item pixels).

A request is (request_id, kind, args); its answer (request_id, ok, value). A notification has no request id
(request_id 0) and gets no answer: the core's state, or a front's announce/withdraw.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass
from typing import Any

from service.errors import ErrorCode, ServiceError

HEADER = struct.Struct("!I")
MAX_FRAME_BYTES = 1 << 30  # a frame this large is a bug, not a message: the connection is dropped


@dataclass(frozen=True, slots=True)
class ArrayRef:
    """An array the sender wrote into its arena: where, and how to view it."""

    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count * _itemsize(self.dtype)


_ITEMSIZES: dict[str, int] = {}


def _itemsize(dtype: str) -> int:
    size = _ITEMSIZES.get(dtype)
    if size is None:
        import numpy as np

        size = _ITEMSIZES[dtype] = np.dtype(dtype).itemsize
    return size


class Outbox:
    """Messages queued during one turn of the event loop leave in one write: a batch's answers to many requests,
    or several requests of one front, cost one system call instead of one each."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._frames: list[bytes] = []

    def put(self, message: Any) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(encode(message))

    def _flush(self) -> None:
        frames, self._frames = self._frames, []
        if frames and not self.writer.is_closing():
            self.writer.writelines(frames)


def encode(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=5)
    return HEADER.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next message; asyncio.IncompleteReadError when the peer has gone."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise ConnectionError(f"frame of {size} bytes: the peer is not a jepa-serve process")
    return pickle.loads(await reader.readexactly(size))


@dataclass(frozen=True, slots=True)
class RemoteError:
    """A ServiceError raised on the other side, as data: its class, code, message, detail and Retry-After."""

    kind: str
    code: str
    message: str
    detail: dict[str, Any]
    retry_after_s: float | None

    @classmethod
    def of(cls, exc: ServiceError) -> RemoteError:
        return cls(type(exc).__name__, exc.code.value, exc.message, exc.detail, getattr(exc, "retry_after_s", None))

    def exception(self) -> ServiceError:
        """The same error, raised again on this side (its class from service.errors, else ServiceError)."""
        from service import errors

        kind = getattr(errors, self.kind, None)
        if not (isinstance(kind, type) and issubclass(kind, ServiceError)):
            kind = ServiceError
        exc = kind.__new__(kind)
        Exception.__init__(exc, self.message)
        exc.message, exc.detail, exc.code = self.message, self.detail, ErrorCode(self.code)
        if self.retry_after_s is not None:
            exc.retry_after_s = self.retry_after_s
        return exc
