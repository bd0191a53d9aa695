"""The objects one app instance serves with, built in the lifespan and handed to routes by dependency."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from service.config import MediaConfig, ProcessesConfig, ServerConfig
from service.embed_cache import EmbeddingCache
from service.index.backend import CollectionBackend, SearchableCollection
from service.ipc.counters import Gate, LocalGate
from service.media.memory import DecodeMemory
from service.media.payload import MediaItem, MediaLimits, RawVideo
from service.metrics import Metrics
from service.model_pool import ModelPool

T = TypeVar("T")


MAX_AUTO_DECODE_THREADS = 32  # past this many, more threads mostly contend for the interpreter between decodes


def decode_thread_count(setting: int, share: int = 1) -> int:
    """JEPA_DECODE_THREADS, with 0 (auto) resolved: one thread per core this process may run on (its CPU
    affinity, which a cpuset or taskset narrows; os.cpu_count() counts the whole machine), at most 32; a front
    of `share` fronts takes its share of the cores."""
    if setting:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores // share, MAX_AUTO_DECODE_THREADS))


@dataclass
class Executors:
    """Blocking work by job, each on its own named threads (the engine's executor belongs to the batchers)."""

    decode: ThreadPoolExecutor  # image and video decoding, preprocessing: CPU-bound
    storage: ThreadPoolExecutor  # index search, WAL writes, collection locks, Redis, embedding-cache I/O: waits
    # videos decoding at once (JEPA_MAX_CONCURRENT_VIDEO_DECODES), whatever the decode threads: each holds a
    # decoder's frames at the source resolution, so their number is what bounds that memory
    video_slots: asyncio.Semaphore
    # what images decoding at once may hold (JEPA_IMAGE_DECODE_BUDGET_BYTES): each decode reserves its share
    image_memory: DecodeMemory
    decode_threads: int = 1  # the decode executor's threads (a request's images go in this many runs at most)

    @classmethod
    def from_config(cls, processes: ProcessesConfig, media: MediaConfig, share: int = 1,
                    decode_bytes: Gate | None = None) -> Executors:
        """`share`: the number of front processes that split the server's decoding between them (each takes its
        share of the cores and of the concurrent video decodes); `decode_bytes`: the server-wide count of image
        decode memory, which every front reserves from (None: this process's own budget)."""
        threads = decode_thread_count(processes.decode_threads, share)
        return cls(decode=ThreadPoolExecutor(threads, thread_name_prefix="decode"), decode_threads=threads,
                   storage=ThreadPoolExecutor(processes.storage_threads, thread_name_prefix="storage"),
                   video_slots=asyncio.Semaphore(max(1, -(-media.max_concurrent_video_decodes // share))),
                   image_memory=DecodeMemory(media.image_decode_budget_bytes, decode_bytes))

    def shutdown(self) -> None:
        self.decode.shutdown(wait=True)
        self.storage.shutdown(wait=True)


@dataclass
class Services:
    config: ServerConfig
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
    # open /stream/surprise connections, bounded by JEPA_STREAM_MAX_CONNECTIONS: this process's, or every
    # front's under jepa-serve
    streams: Gate = field(default_factory=LocalGate)
    embed_cache: EmbeddingCache | None = None  # None when JEPA_EMBED_CACHE is off
    # stops the process with an exit status when start-up gives up (set by `jepa-serve`; None in process)
    stop_process: Callable[[int], None] | None = None
    # told when the phase changes (the core process tells its fronts); None in a single process
    on_change: Callable[[], None] | None = None
    # what one request's media may cost, around this process's image decode budget: made once, here
    media: MediaLimits = field(init=False)

    def __post_init__(self) -> None:
        self.media = self.config.media.limits(self.executors.image_memory)

    def set_phase(self, phase: str, retrying: dict[str, Any] | None = None) -> None:
        self.phase = phase  # type: ignore[assignment]  # one of the Literal's values
        self.retrying = retrying
        if self.on_change is not None:
            self.on_change()

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

    async def collection(self, name: str) -> SearchableCollection:
        """A collection by name, looked up on a storage thread: a front's store asks the core (never on the loop)."""
        return await self.storage(self.store.get, name)

    async def storage(self, fn: Callable[..., T], *args: Any) -> T:
        """Index, store and cache work off the event loop (anything that takes a collection lock or does I/O)."""
        return await asyncio.get_running_loop().run_in_executor(self.executors.storage, fn, *args)
