"""The objects one app instance serves with, built in the lifespan and handed to routes by dependency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from service.embed_cache import EmbeddingCache
from service.index.backend import CollectionBackend
from service.media.payload import MediaItem, RawVideo
from service.metrics import Metrics
from service.model_pool import ModelPool
from service.settings import Settings

T = TypeVar("T")


@dataclass
class Executors:
    """Blocking work by job, each on its own named threads (the engine's executor belongs to the batchers)."""

    decode: ThreadPoolExecutor  # image and video decoding, preprocessing: CPU-bound
    storage: ThreadPoolExecutor  # index search, WAL writes, collection locks, Redis, embedding-cache I/O: waits
    # videos decoding at once (settings.max_concurrent_video_decodes), whatever the decode threads: each holds a
    # decoder's frames at the source resolution, so their number is what bounds that memory
    video_slots: asyncio.Semaphore

    @classmethod
    def from_settings(cls, settings: Settings) -> Executors:
        return cls(decode=ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode"),
                   storage=ThreadPoolExecutor(settings.storage_threads, thread_name_prefix="storage"),
                   video_slots=asyncio.Semaphore(settings.max_concurrent_video_decodes))

    def shutdown(self) -> None:
        self.decode.shutdown(wait=True)
        self.storage.shutdown(wait=True)


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    models: ModelPool
    store: CollectionBackend
    executors: Executors
    # loading -> building_engine (TensorRT) -> warming -> ready; "failed" when nothing can serve.
    # waiting_for_backend: Redis (or another backend) cannot be reached yet; start-up retries (see `retrying`).
    phase: Literal[
        "loading", "building_engine", "waiting_for_backend", "warming", "ready", "failed", "stopping"
    ] = "loading"
    # why start-up is retrying (reason, attempts, next attempt, give-up time); None when it is not
    retrying: dict[str, Any] | None = None
    open_streams: int = 0  # /stream/surprise connections now open (bounded by settings.stream_max_connections)
    embed_cache: EmbeddingCache | None = None  # None when settings.embed_cache is off
    # stops the process with an exit status when start-up gives up (set by `jepa-serve`; None in process)
    stop_process: Callable[[int], None] | None = None

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    async def decode(self, fn: Callable[..., T], *args: Any) -> T:
        """Media decoding off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executors.decode, fn, *args)

    async def decode_item(self, item: MediaItem, fn: Callable[..., T], *args: Any) -> T:
        """Decode one media item off the event loop; a video first waits for one of the video decode slots."""
        if not isinstance(item, RawVideo):
            return await self.decode(fn, *args)
        async with self.executors.video_slots:
            return await self.decode(fn, *args)

    async def storage(self, fn: Callable[..., T], *args: Any) -> T:
        """Index, store and cache work off the event loop (anything that takes a collection lock or does I/O)."""
        return await asyncio.get_running_loop().run_in_executor(self.executors.storage, fn, *args)
