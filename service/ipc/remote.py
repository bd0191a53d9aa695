"""Front side: what lives in the core, with the interfaces the routers and the pipeline already use.

`RemoteBatcher` is a model component's batcher (infer / announce / withdraw), `RemoteStore` and
`RemoteCollection` the collection store (the CollectionBackend and SearchableCollection protocols: synchronous,
called on the storage threads as every store is), `RemoteCache` the in-memory embedding cache, `RemoteLimiter`
the per-key rate limit counted once for the whole server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.index.collection import CollectionConfig, Hit, Metadata, prepare_vectors
from service.ipc.arena import Arena
from service.ipc.link import CoreLink
from service.ipc.wire import ArrayRef
from service.security.ratelimit import RateDecision

Arrays = dict[str, np.ndarray]

# Arrays smaller than this travel inside the message: a predictor's states and actions, a tensor of a few
# values. Larger ones (decoded pixels, clips, token grids) go through the arena.
INLINE_BYTES = 16 * 1024


@dataclass(frozen=True)
class EngineInfo:
    """What the front shows of an engine the core runs (/models, /healthz)."""

    name: str
    device: str
    precision: str


@dataclass(frozen=True)
class RemotePolicy:
    max_queue_size: int


class RemoteBatcher:
    """A (model, component) batcher of the core. Items are written into the front's arena; the core reads them
    there and answers with the outputs asked for, stacked."""

    def __init__(self, link: CoreLink, arena: Arena | None, model: str, component: str, engine: EngineInfo,
                 max_queue_size: int, running: Callable[[], bool]) -> None:
        self.link, self.arena = link, arena
        self.model, self._component = model, component
        self.engine = engine
        self.engines = (engine,)
        self.policy = RemotePolicy(max_queue_size)
        self._running = running

    @property
    def component(self) -> str:
        return self._component

    @property
    def running(self) -> bool:
        return self.link.connected and self._running()

    def announce(self, n: int) -> None:
        self.link.notify("announce", self.model, self._component, n)

    def withdraw(self, n: int) -> None:
        self.link.notify("withdraw", self.model, self._component, n)

    async def infer(self, items: Sequence[Arrays], *, deadline: float | None = None, cost: int = 1,
                    announced: bool = False, outputs: Sequence[str] | None = None) -> list[Arrays]:
        refs: list[ArrayRef] = []
        rows = [{name: self._place(array, refs) for name, array in item.items()} for item in items]
        timeout_s = None if deadline is None else deadline - time.perf_counter()
        stacked: Arrays = await self.link.call(
            "infer", self.model, self._component, rows, timeout_s, cost, announced,
            None if outputs is None else tuple(outputs), release=lambda: self._free(refs))
        return [{name: value[i] for name, value in stacked.items()} for i in range(len(items))]

    def _place(self, array: np.ndarray, refs: list[ArrayRef]) -> np.ndarray | ArrayRef:
        if self.arena is None or array.nbytes < INLINE_BYTES:
            return array
        ref = self.arena.put(array)
        if ref is None:  # the arena is full: this item travels in the message
            return array
        refs.append(ref)
        return ref

    def _free(self, refs: list[ArrayRef]) -> None:
        assert self.arena is not None or not refs
        for ref in refs:
            self.arena.free(ref)  # type: ignore[union-attr]


class RemoteCollection:
    """A collection held by the core. Its configuration is read when the handle is made; everything else asks."""

    def __init__(self, link: CoreLink, config: CollectionConfig) -> None:
        self.link = link
        self.config = config

    def _ask(self, method: str, *args: Any) -> Any:
        return self.link.call_blocking("collection", self.config.name, method, *args)

    @property
    def count(self) -> int:
        return self._ask("count")

    @property
    def memory_bytes(self) -> int:
        return self._ask("memory_bytes")

    @property
    def index_in_use(self) -> str:
        return self._ask("index_in_use")

    @property
    def tombstones(self) -> int:
        return self._ask("tombstones")

    def prepare_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return prepare_vectors(vectors, self.config)

    def get(self, point_id: str) -> tuple[np.ndarray, Metadata]:
        return self._ask("get", point_id)

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[str | None] = (),
               filter: Mapping[str, Any] | None = None,  # the protocol's name
               params: Mapping[str, Any] | None = None) -> list[list[Hit]]:
        return self._ask("search", queries, k, list(exclude), filter, params)


class RemoteStore:
    """The core's collection store. `recovered` and `failures` follow the core's state notifications."""

    def __init__(self, link: CoreLink) -> None:
        self.link = link
        self.recovered = False
        self.failures: dict[str, str] = {}

    def _ask(self, method: str, *args: Any) -> Any:
        return self.link.call_blocking("store", method, *args)

    def recover(self) -> None:  # the core recovers; a front only waits for it (phase)
        return None

    def close(self) -> None:
        return None

    def names(self) -> list[str]:
        return self._ask("names")

    def get(self, name: str) -> RemoteCollection:
        return RemoteCollection(self.link, self._ask("config", name))

    def create(self, config: CollectionConfig) -> tuple[RemoteCollection, bool]:
        stored, created = self._ask("create", config)
        return RemoteCollection(self.link, stored), created

    def drop(self, name: str) -> None:
        self._ask("drop", name)

    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata]) -> int:
        return self._ask("upsert", name, list(ids), vectors, list(metadata))

    def delete(self, name: str, ids: Sequence[str]) -> int:
        return self._ask("delete", name, list(ids))


class RemoteCache:
    """The core's in-memory embedding cache (a Redis cache is shared already: fronts open it themselves)."""

    backend = "memory"

    def __init__(self, link: CoreLink) -> None:
        self.link = link

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        return self.link.call_blocking("cache", "get_many", list(keys))

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        self.link.call_blocking("cache", "put_many", list(keys), vectors)

    def close(self) -> None:
        """The core owns the cache: nothing of it is held here."""


class RemoteLimiter:
    """The in-process rate limiter, kept by the core so that a key's count is one for the whole server."""

    def __init__(self, link: CoreLink, limit: int, window_s: float) -> None:
        self.link, self.limit, self.window_s = link, limit, window_s

    async def hit(self, identity: str) -> RateDecision:
        allowed, retry_after_s = await self.link.call("limit", identity)
        return RateDecision(allowed, retry_after_s)

    async def aclose(self) -> None:
        return None
