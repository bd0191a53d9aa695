"""A memory budget that concurrent decodes share: each reserves what it will hold before it allocates it.

The decode threads bound how many images decode at once, not what they hold: four 6000 x 6000 lossless WebPs
(1.9 kB each) took the process from 557 to 1,424 MB, never given back. Each decode now reserves its estimated
peak (service/media/images.py decode_bytes) from one budget per process; while the budget is spent, the next
large decode waits in its thread for one to finish (small ones fit beside them). One decode larger than the
whole budget could never run: it is refused (413) instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from service.errors import PayloadTooLarge
from service.ipc.counters import Gate

SHARED_POLL_S = 0.01


class DecodeMemory:
    """`shared`: under jepa-serve, the server-wide count every front's decodes reserve from (so the budget holds
    for the server, not for each front); a decode waiting on another front's is told of nothing, so it looks
    again every SHARED_POLL_S."""

    def __init__(self, budget_bytes: int, shared: Gate | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.shared = shared
        self._held = 0
        self._changed = threading.Condition()

    @property
    def held_bytes(self) -> int:
        return self._held

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` of the budget for the block (blocking the calling thread until they are free)."""
        if nbytes > self.budget_bytes:
            raise PayloadTooLarge(
                f"decoding this image would take about {nbytes / 2**20:.0f} MiB; the limit is "
                f"{self.budget_bytes / 2**20:.0f} MiB (a smaller image, or a JPEG)",
                {"decode_bytes": nbytes, "image_decode_budget_bytes": self.budget_bytes})
        with self._changed:
            while not self._take(nbytes):
                self._changed.wait(None if self.shared is None else SHARED_POLL_S)
        try:
            yield
        finally:
            with self._changed:
                self._held -= nbytes
                if self.shared is not None:
                    self.shared.leave(nbytes)
                self._changed.notify_all()

    def _take(self, nbytes: int) -> bool:
        if self.shared is not None:
            taken = self.shared.enter(self.budget_bytes, nbytes)
        else:
            taken = self._held + nbytes <= self.budget_bytes
        if taken:
            self._held += nbytes
        return taken
