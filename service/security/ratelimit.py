"""Per-key fixed-window rate limits: in Redis (shared by every replica) or in process.

Fixed windows are cheap (one INCR per request) and their worst case, twice
the limit across a window boundary, is acceptable for abuse protection; the
answer to an exhausted window is 429 with `Retry-After` = seconds to its end.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: float


class RateLimiter(Protocol):
    limit: int
    window_s: float

    async def hit(self, identity: str) -> RateDecision: ...

    async def aclose(self) -> None: ...


def _window(now: float, window_s: float) -> tuple[int, float]:
    """(window index, seconds until it ends)."""
    index = math.floor(now / window_s)
    return index, (index + 1) * window_s - now


class InProcessLimiter:
    """Counters in this process only: with N replicas a key gets up to N x the limit."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.time) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    async def hit(self, identity: str) -> RateDecision:
        index, left = _window(self._clock(), self.window_s)
        with self._lock:
            window, count = self._counts.get(identity, (index, 0))
            count = count + 1 if window == index else 1
            self._counts[identity] = (index, count)
            if len(self._counts) > 100_000:  # forget idle identities: bounded memory under many client addresses
                self._counts = {k: v for k, v in self._counts.items() if v[0] == index}
        return RateDecision(count <= self.limit, left)

    async def aclose(self) -> None:
        return None


class RedisLimiter:
    """One counter per (identity, window) in Redis: INCR + EXPIRE in one round trip.

    If Redis cannot be reached the request is let through and the error
    counted: a rate limiter must not turn a Redis outage into an API outage.
    """

    def __init__(self, url: str, limit: int, window_s: float, *, prefix: str = "jepa:ratelimit",
                 on_error: Callable[[], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        from redis.asyncio import Redis

        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._redis = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = prefix
        self._on_error = on_error or (lambda: None)
        self._last_warning = 0.0

    async def hit(self, identity: str) -> RateDecision:
        index, left = _window(self._clock(), self.window_s)
        key = f"{self._prefix}:{identity}:{index}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, math.ceil(self.window_s) + 1)
                count, _ = await pipe.execute()
        except Exception as exc:  # any Redis failure: fail open, loudly
            self._on_error()
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning("rate limiter: Redis unavailable (%s); requests are not limited", type(exc).__name__)
            return RateDecision(True, left)
        return RateDecision(int(count) <= self.limit, left)

    async def aclose(self) -> None:
        await self._redis.aclose()
