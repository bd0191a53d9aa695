"""Counts that hold for the whole server, not for one front: requests in flight, open streams and connections,
the memory image decodes have reserved.

Each front counts in its own slot of one small shared file (mapped by every front); a check adds up every slot
under one lock (flock on that file), so a limit holds across fronts exactly: two fronts cannot both take the
last place. When a front dies with requests in flight, the supervisor clears its slot, so a crashed front does
not keep places forever. A flock is released by the kernel when its holder dies, kill -9 included.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SLOT = struct.Struct("q")


class Gate(Protocol):
    """A bounded count: `enter` takes a place if fewer than `limit` are taken, `leave` gives it back."""

    @property
    def count(self) -> int: ...  # the whole server's
    @property
    def own(self) -> int: ...  # this process's share (a metric each process reports, summed by Prometheus)
    def enter(self, limit: int, amount: int = 1) -> bool: ...
    def leave(self, amount: int = 1) -> None: ...


class LocalGate:
    """One process's count (the in-process app): the event loop is the only user, so no lock."""

    def __init__(self) -> None:
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    @property
    def own(self) -> int:
        return self._count

    def enter(self, limit: int, amount: int = 1) -> bool:
        if limit and self._count + amount > limit:
            return False
        self._count += amount
        return True

    def leave(self, amount: int = 1) -> None:
        self._count -= amount


class SharedCounts:
    """One count shared by `fronts` processes: a file of one slot per front. Made by the supervisor; each
    process maps it by its path (so it travels to a child as a string and a number)."""

    def __init__(self, path: Path, fronts: int, *, create: bool = False) -> None:
        self.path, self.fronts = Path(path), fronts
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        self._fd = os.open(self.path, flags, 0o600)
        if create:
            os.ftruncate(self._fd, SLOT.size * fronts)
        self._map = mmap.mmap(self._fd, SLOT.size * fronts)

    def __reduce__(self):
        return (SharedCounts, (self.path, self.fronts))

    @contextmanager
    def _locked(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, front: int) -> int:
        return SLOT.unpack_from(self._map, front * SLOT.size)[0]

    def _set(self, front: int, value: int) -> None:
        SLOT.pack_into(self._map, front * SLOT.size, value)

    def total(self) -> int:
        return sum(self._slot(front) for front in range(self.fronts))

    def gate(self, front: int) -> SharedGate:
        return SharedGate(self, front)

    def clear(self, front: int) -> None:
        """A front has died: whatever it counted is no longer in flight."""
        with self._locked():
            self._set(front, 0)


@dataclass(frozen=True)
class ServerCounts:
    """The counts every front shares, one file each in the server's private folder."""

    requests: SharedCounts  # requests in flight (JEPA_MAX_CONCURRENT_REQUESTS)
    streams: SharedCounts  # open /stream/surprise connections (JEPA_STREAM_MAX_CONNECTIONS)
    connections: SharedCounts  # open HTTP connections (JEPA_MAX_CONNECTIONS)
    decode_bytes: SharedCounts  # memory reserved by image decodes (JEPA_IMAGE_DECODE_BUDGET_BYTES)

    @classmethod
    def create(cls, folder: Path, fronts: int) -> ServerCounts:
        return cls(*(SharedCounts(folder / f"count-{name}", fronts, create=True)
                     for name in ("requests", "streams", "connections", "decode_bytes")))

    @property
    def fronts(self) -> int:
        return self.requests.fronts

    def clear(self, front: int) -> None:
        """A front has died: nothing it counted is open any more."""
        for counts in (self.requests, self.streams, self.connections, self.decode_bytes):
            counts.clear(front)


class SharedGate:
    """One front's view of a server-wide count."""

    def __init__(self, counts: SharedCounts, front: int) -> None:
        self._counts, self._front = counts, front

    @property
    def count(self) -> int:
        with self._counts._locked():
            return self._counts.total()

    @property
    def own(self) -> int:
        return self._counts._slot(self._front)

    def enter(self, limit: int, amount: int = 1) -> bool:
        counts = self._counts
        with counts._locked():
            if limit and counts.total() + amount > limit:
                return False
            counts._set(self._front, counts._slot(self._front) + amount)
            return True

    def leave(self, amount: int = 1) -> None:
        # No lock: only this front's event loop writes its slot, and a lower count read by another front mid-way
        # can only make that front more careful (an aligned 8-byte store is seen whole).
        counts = self._counts
        counts._set(self._front, max(0, counts._slot(self._front) - amount))
