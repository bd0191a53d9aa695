"""The core process: the one owner of what must be single in a server.

It holds the batchers and engine instances (every front's items meet in one batch), the collections (the
write-ahead logs' single writer), the in-memory embedding cache and the server-wide rate limit, and answers
the fronts over `service.ipc`. Its event loop does only small work: it reads arrays where the fronts wrote
them, queues items, and sends results back. Start-up is the in-process app's (service/app.py `bring_up`),
and so are its phases, which every front reports in /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.config import RateLimitConfig, ServerConfig
from service.errors import ErrorCode, NotFound
from service.index.dirlock import DataDirLock
from service.ipc.remote import EngineInfo
from service.ipc.server import CoreServer, FrontConnection
from service.logs import configure_logging
from service.metrics import Metrics
from service.processes import become_child, use_uvloop
from service.security.ratelimit import InProcessLimiter
from service.state import Services

log = logging.getLogger("service.core")

FRONTS_GRACE_S = 10.0  # past the fronts' own shutdown timeout, how long the core waits for them to go

# What a front may ask of the store and of a collection (anything else is refused: the names are data).
STORE_METHODS = frozenset({"names", "create", "drop", "upsert", "delete"})
COLLECTION_METHODS = frozenset({"get", "search"})
COLLECTION_PROPERTIES = frozenset({"count", "memory_bytes", "index_in_use", "tombstones"})
CACHE_METHODS = frozenset({"get_many", "put_many"})


class CoreRequests:
    """The requests a front may send, each against the core's Services."""

    def __init__(self, services: Services, limiter: InProcessLimiter | None, fronts_wanted: int) -> None:
        self.services = services
        self.limiter = limiter
        # /readyz turns ready once every front has its models, at first start: a probe that hits the first front
        # up would otherwise call a server ready whose other fronts are still importing (later restarts of one
        # front leave the server ready: the others serve)
        self.fronts_wanted = fronts_wanted
        self.fronts_built: set[str] = set()  # only grows: once up, a front restarting later keeps the server up

    def _batcher(self, model: str, component: str):
        served = self.services.models.get(model)
        for batcher in served.batchers:
            if batcher.component == component:
                return batcher
        raise NotFound(f"model {model!r} has no component {component!r}", code=ErrorCode.MODEL_NOT_FOUND)

    async def infer(self, front: FrontConnection, model: str, component: str, rows: list[dict[str, Any]],
                    timeout_s: float | None, cost: int, announced: bool,
                    outputs: tuple[str, ...] | None) -> dict[str, np.ndarray]:
        """Items (views into the front's arena) through the component's batcher -> the outputs asked for, stacked."""
        batcher = self._batcher(model, component)
        items = [{name: front.array(value) for name, value in row.items()} for row in rows]
        if announced:
            front.announced[(model, component)] -= len(items)
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        results = await batcher.infer(items, deadline=deadline, cost=cost, announced=announced, outputs=outputs)
        return {name: np.stack([r[name] for r in results]) for name in results[0]}

    def announce(self, front: FrontConnection, model: str, component: str, n: int) -> None:
        self._batcher(model, component).announce(n)
        front.announced[(model, component)] += n

    def withdraw(self, front: FrontConnection, model: str, component: str, n: int) -> None:
        self._batcher(model, component).withdraw(n)
        front.announced[(model, component)] -= n

    @property
    def fronts_up(self) -> bool:
        return len(self.fronts_built) >= self.fronts_wanted

    def built(self, front: FrontConnection) -> None:
        """A front holds its models and serves."""
        was_up = self.fronts_up
        self.fronts_built.add(front.name)
        if self.fronts_up and not was_up and self.services.on_change is not None:
            self.services.on_change()

    def disconnected(self, front: FrontConnection) -> None:
        """A front went away: the items it announced will not come."""
        for (model, component), n in front.announced.items():
            if n > 0:
                with contextlib.suppress(NotFound):
                    self._batcher(model, component).withdraw(n)
        front.announced.clear()

    async def store(self, front: FrontConnection, method: str, *args: Any) -> Any:
        store = self.services.store
        if method == "config":
            return store.get(args[0]).config
        if method not in STORE_METHODS:
            raise NotFound(f"the store has no method {method!r}")
        if method == "create":
            collection, created = await self.services.storage(store.create, *args)
            return collection.config, created
        return await self.services.storage(getattr(store, method), *args)

    async def collection(self, front: FrontConnection, name: str, method: str, *args: Any) -> Any:
        collection = self.services.store.get(name)
        if method in COLLECTION_PROPERTIES:
            return await self.services.storage(getattr, collection, method)
        if method not in COLLECTION_METHODS:
            raise NotFound(f"a collection has no method {method!r}")
        return await self.services.storage(getattr(collection, method), *args)

    async def cache(self, front: FrontConnection, method: str, *args: Any) -> Any:
        cache = self.services.embed_cache
        if cache is None or method not in CACHE_METHODS:
            raise NotFound("the core holds no embedding cache")
        return await self.services.storage(getattr(cache, method), *args)

    async def limit(self, front: FrontConnection, identity: str) -> tuple[bool, float]:
        if self.limiter is None:
            return True, 0.0
        decision = await self.limiter.hit(identity)
        return decision.allowed, decision.retry_after_s

    def state(self) -> dict[str, Any]:
        """What every front shows of the core: /readyz, /healthz and /models read it."""
        services = self.services
        models = {}
        for model in services.models:
            models[model.name] = {
                component.component: {
                    "engine": EngineInfo(component.engine.name, component.engine.device, component.engine.precision),
                    "max_queue_size": component.policy.max_queue_size,
                    "running": component.running,
                }
                for component in model.batchers
            }
        return {
            "phase": services.phase, "retrying": services.retrying, "models": models,
            "failures": dict(services.models.failures), "recovered": services.store.recovered,
            "collections_failed": dict(services.store.failures), "fronts_up": self.fronts_up,
        }


def run_core(config: ServerConfig, socket_path: str, log_level: str, parent_pid: int,
             data_dir_lock: DataDirLock | None, fronts_wanted: int) -> None:
    """The core process's entry point (started by the supervisor)."""
    become_child("jepa-core", parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C reaches every process: the supervisor decides
    configure_logging(config.logging.format, log_level)
    use_uvloop()
    sys.exit(asyncio.run(serve_core(config, Path(socket_path), data_dir_lock, fronts_wanted)))


async def serve_core(config: ServerConfig, path: Path, data_dir_lock: DataDirLock | None, fronts_wanted: int) -> int:
    from service.app import bring_up, build_services, close_services

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    exit_code = 0

    def stop_process(code: int) -> None:
        nonlocal exit_code
        exit_code = code
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    services = build_services(config, Metrics(), data_dir_lock, stop_process)
    requests = CoreRequests(services, _limiter(config.security.rate_limit), fronts_wanted)
    server = CoreServer(
        path,
        requests={"infer": requests.infer, "store": requests.store, "collection": requests.collection,
                  "cache": requests.cache, "limit": requests.limit},
        notifications={"announce": requests.announce, "withdraw": requests.withdraw, "built": requests.built},
        state=requests.state, on_disconnect=requests.disconnected,
    )
    services.on_change = server.broadcast_state
    await server.start()
    startup = asyncio.create_task(bring_up(services), name="bring-up")
    await stop.wait()
    if exit_code == 0:
        # SIGTERM: from the supervisor once every front has stopped, or from a process-group signal (systemd,
        # `timeout`, `kill 0`) that reached the fronts at the same moment. Either way, serve the fronts until the
        # last has finished its requests and gone, so a request in flight still finds its batcher and collection.
        await server.fronts_gone(config.connections.shutdown_timeout_s + FRONTS_GRACE_S)
    services.set_phase("stopping")
    startup.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await startup
    await close_services(services)
    await server.close()
    return exit_code


def _limiter(rate: RateLimitConfig) -> InProcessLimiter | None:
    """The in-process rate limit lives here, once for the whole server (a Redis one is shared by the fronts)."""
    if rate.requests <= 0 or rate.redis_url is not None:
        return None
    return InProcessLimiter(rate.requests, rate.window_s)

