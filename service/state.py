"""The objects one app instance serves with, built in the lifespan and handed to routes by dependency."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from service.index.backend import CollectionBackend
from service.media.payload import MediaItem, RawVideo
from service.metrics import Metrics
from service.model_pool import ModelPool
from service.settings import Settings


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    models: ModelPool
    store: CollectionBackend
    decode_pool: ThreadPoolExecutor
    # videos decoded at once in this process (settings.max_concurrent_video_decodes): each holds a decoder's
    # frames at the source resolution, so their number, not the decode threads', bounds that memory
    video_decode_slots: asyncio.Semaphore
    # loading -> building_engine (TensorRT) -> warming -> ready; "failed" when nothing can serve.
    phase: Literal["loading", "building_engine", "warming", "ready", "failed", "stopping"] = "loading"

    @property
    def ready(self) -> bool:
        return self.phase == "ready"
    embed_cache: Any = None  # service.embed_cache.EmbeddingCache, or None when off

    async def run_blocking(self, fn, *args):
        """Decoding and index work off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)

    async def decode(self, item: MediaItem, fn, *args):
        """Decode one media item off the event loop; a video first waits for a video decode slot."""
        if not isinstance(item, RawVideo):
            return await self.run_blocking(fn, *args)
        async with self.video_decode_slots:
            return await self.run_blocking(fn, *args)
