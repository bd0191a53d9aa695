"""The objects one app instance serves with, built in the lifespan and handed to routes by dependency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from service.index.backend import CollectionBackend
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
    # loading -> building_engine (TensorRT) -> warming -> ready; "failed" when nothing can serve.
    # waiting_for_backend: Redis (or another backend) cannot be reached yet; start-up retries (see `retrying`).
    phase: Literal["loading", "building_engine", "waiting_for_backend", "warming", "ready", "failed", "stopping"] = "loading"
    # why start-up is retrying (reason, attempts, next attempt, give-up time); None when it is not
    retrying: dict[str, Any] | None = None
    # stops the process with an exit status when start-up gives up (set by `jepa-serve`; None in process)
    stop_process: Callable[[int], None] | None = None

    @property
    def ready(self) -> bool:
        return self.phase == "ready"
    embed_cache: Any = None  # service.embed_cache.EmbeddingCache, or None when off

    async def run_blocking(self, fn, *args):
        """Decoding and index work off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)
