"""Turns for an engine that does not lock itself (milvus-lite): reads together, writes one at a time beside the
reads, and schema changes (create, drop, load) alone.

milvus-lite serves every call on its own threads without locking its write path or its cache of open
collections: concurrent upserts interleaved their records inside its write-ahead log (acknowledged writes lost
after a kill -9), and a read racing a create of the same name cached a second copy of the collection without
its index (the create then failed: "no index on collection"). A Milvus server needs none of this: `Turns(False)`
lets everything through.

Waiting longer than `timeout_s` for a turn raises StorageUnavailable (503, nothing applied: safe to retry).
Turns do not nest: a caller gives one up before asking for another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.errors import StorageUnavailable


class Turns:
    def __init__(self, enabled: bool, timeout_s: float) -> None:
        self.enabled = enabled
        self._timeout = timeout_s
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._alone = False
        self._alone_waiting = 0  # a waiting schema change holds back new reads and writes (no starvation)

    @contextmanager
    def read(self) -> Iterator[None]:
        self._take(lambda: not (self._alone or self._alone_waiting), lambda: self._add_readers(1), "read")
        try:
            yield
        finally:
            self._release(lambda: self._add_readers(-1))

    @contextmanager
    def write(self) -> Iterator[None]:
        self._take(lambda: not (self._writing or self._alone or self._alone_waiting),
                   lambda: setattr(self, "_writing", True), "write")
        try:
            yield
        finally:
            self._release(lambda: setattr(self, "_writing", False))

    @contextmanager
    def alone(self) -> Iterator[None]:
        """A schema change: no read or write runs meanwhile."""
        self._release(lambda: setattr(self, "_alone_waiting", self._alone_waiting + 1))
        try:
            self._take(lambda: not (self._alone or self._writing or self._readers),
                       lambda: setattr(self, "_alone", True), "schema change")
        finally:
            self._release(lambda: setattr(self, "_alone_waiting", self._alone_waiting - 1))
        try:
            yield
        finally:
            self._release(lambda: setattr(self, "_alone", False))

    def _add_readers(self, n: int) -> None:
        self._readers += n

    def _take(self, free: Callable[[], bool], take: Callable[[], None], what: str) -> None:
        """Wait until `free()`, then `take()`, under the condition; 503 after the timeout."""
        if not self.enabled:
            return
        with self._cond:
            if not self._cond.wait_for(free, self._timeout):
                raise StorageUnavailable(f"milvus-lite was busy for over {self._timeout:g} s before this {what} "
                                         "could start; nothing was applied; retry later")
            take()

    def _release(self, change: Callable[[], None]) -> None:
        """Change the state and wake the waiters (also used to count a waiting schema change)."""
        if not self.enabled:
            return
        with self._cond:
            change()
            self._cond.notify_all()
