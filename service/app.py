"""App factory and lifespan: everything is built per app, nothing at import time.

The lifespan returns at once and brings the models up in a background task, so
/healthz answers while engines load and warm, and /readyz reports the phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI

from service.api import (
    classify,
    collections,
    embed,
    health,
    limits,
    metrics,
    models,
    plan,
    predict,
    search,
    stream,
    surprise,
)
from service.api.auth import AuthMiddleware
from service.api.errors import install_error_handlers
from service.api.openapi import install_docs, operation_id
from service.api.ui import install_ui
from service.config import ServerConfig
from service.embed_cache import open_cache
from service.errors import StorageUnavailable
from service.front import FrontRole, front_lifespan
from service.index.backend import open_store
from service.index.dirlock import DataDirLock
from service.ipc.counters import Gate, LocalGate
from service.ipc.link import CoreLink
from service.ipc.remote import RemoteLimiter
from service.logs import RequestLogMiddleware
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, ConcurrencyLimitMiddleware
from service.model_pool import ModelPool
from service.repository import scan_repository
from service.security.guard import Guard
from service.settings import Settings
from service.state import Executors, Services

log = logging.getLogger(__name__)

# Exit statuses of a start-up that cannot complete (the process exits so the orchestrator restarts it; a process
# that stayed up unready would never be restarted). 75 = EX_TEMPFAIL: a backend stayed unreachable, a restart may work.
EXIT_BACKEND_UNAVAILABLE = 75
EXIT_STARTUP_FAILED = 1
FIRST_RETRY_S = 0.25


def _version() -> str:
    try:
        return metadata.version("jepa-serve")
    except metadata.PackageNotFoundError:
        return "0.0.0"


async def bring_up(services: Services) -> None:
    """loading -> warming -> ready (or failed): models, collections, then one pass over every batch size."""
    config = services.config
    if config.runtime.builds_engines:
        services.set_phase("building_engine")  # plans are built (or read from the cache) while loading
    # Start-up has its own thread: loading and warming take minutes and must not hold a storage or decode thread.
    startup = ThreadPoolExecutor(1, thread_name_prefix="startup")
    loop = asyncio.get_running_loop()
    try:
        entries, failures = await loop.run_in_executor(startup, scan_repository, config.models.repository)
        await loop.run_in_executor(startup, services.models.load, entries, failures, config.runtime, config.batching,
                                   config.limits.world, services.metrics)
        if not len(services.models):
            log.error("no model to serve in %s: %s", config.models.repository, _reasons(services.models.failures))
            give_up(services, EXIT_STARTUP_FAILED)
            return
        if not await recover_with_retry(services):
            give_up(services, EXIT_BACKEND_UNAVAILABLE)
            return
        for name in services.store.names():
            count = await services.storage(lambda n=name: services.store.get(n).count)  # milvus: a remote count
            services.metrics.index_points.labels(collection=name).set(count)
        for model in services.models:
            for batcher in model.batchers:
                services.metrics.queue_capacity.labels(model=model.name, component=batcher.component).set(
                    batcher.policy.max_queue_size
                )
        services.models.start(services.on_change)
        if config.runtime.warmup:
            services.set_phase("warming")
            await loop.run_in_executor(startup, services.models.warm_up)
    except Exception:
        log.exception("start-up failed")
        give_up(services, EXIT_STARTUP_FAILED)
        return
    finally:
        startup.shutdown(wait=False)
    services.set_phase("ready")
    log.info("%s: %d model(s) %s; failed: %s", services.phase, len(services.models),
             [m.name for m in services.models], services.models.failures or "none")


def _reasons(failures: dict[str, str]) -> str:
    """Why each entry failed, on one line; or why there were none."""
    if not failures:
        return "the folder holds no model entry (a sub-folder with a manifest.json: `jepa-export demo` makes one)"
    return "; ".join(f"{name}: {reason}" for name, reason in failures.items())


async def recover_with_retry(services: Services) -> bool:
    """Recover the collections; while their backend (Redis) cannot be reached, retry with doubling waits and say why
    in /readyz. False once `startup_give_up_s` has passed without success."""
    processes = services.config.processes
    deadline = time.monotonic() + processes.startup_give_up_s
    wait_s = FIRST_RETRY_S
    attempt = 0
    phase = services.phase
    while True:
        attempt += 1
        try:
            await services.storage(services.store.recover)
        except StorageUnavailable as exc:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                log.error(
                    "start-up gave up after %d attempt(s) in %.0f s: %s", attempt, processes.startup_give_up_s, exc
                )
                services.set_phase(services.phase, {"reason": str(exc), "attempts": attempt, "gave_up": True})
                return False
            services.set_phase("waiting_for_backend", {
                "reason": str(exc), "attempts": attempt, "next_attempt_in_s": round(min(wait_s, left_s), 2),
                "give_up_in_s": round(left_s, 1),
            })
            log.warning("start-up: %s; attempt %d, retrying in %.2f s (giving up in %.0f s)",
                        exc, attempt, min(wait_s, left_s), left_s)
            await asyncio.sleep(min(wait_s, left_s))
            wait_s = min(wait_s * 2, processes.startup_retry_max_s)
            continue
        if attempt > 1:
            log.info("start-up: the backend answered after %d attempt(s)", attempt)
        services.set_phase(phase)
        return True


def give_up(services: Services, exit_code: int) -> None:
    """Start-up cannot complete: not ready, and under `jepa-serve` the process exits with `exit_code`."""
    services.set_phase("failed", services.retrying)
    if services.stop_process is not None:
        log.error("exiting with status %d so that the orchestrator restarts this process", exit_code)
        services.stop_process(exit_code)


def build_services(config: ServerConfig, metrics: Metrics, data_dir_lock: DataDirLock | None,
                   stop_process: Callable[[int], None] | None) -> Services:
    """What serves in this process (the in-process app's lifespan, or the core process): models come up in
    `bring_up`."""
    services = Services(
        config=config, metrics=metrics, models=ModelPool(), store=open_store(config.collections, data_dir_lock),
        executors=Executors.from_config(config.processes, config.media), stop_process=stop_process,
    )
    services.embed_cache = open_cache(config.cache)
    return services


async def close_services(services: Services) -> None:
    """Graceful shutdown: drain the batch queues, snapshot + close every write-ahead log."""
    log.info("shutting down: draining batch queues")
    await services.models.stop()
    collections = len(services.store.names())
    services.store.close()
    if services.embed_cache is not None:
        services.embed_cache.close()
    services.executors.shutdown()
    log.info("shutdown complete: batch queues drained, %d collection(s) snapshotted and closed", collections)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if app.state.front is not None:  # a front process: the core holds models and collections
        async with front_lifespan(app):
            yield
        return
    services = build_services(app.state.config, app.state.metrics, app.state.data_dir_lock,
                              app.state.stop_process)
    app.state.services = services
    startup = asyncio.create_task(bring_up(services), name="bring-up")
    try:
        yield
    finally:
        # uvicorn has stopped accepting and finished in-flight requests (or hit shutdown_timeout_s)
        services.set_phase("stopping")
        startup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await startup
        await close_services(services)
        await app.state.guard.aclose()


def create_app(config: ServerConfig | None = None, data_dir_lock: DataDirLock | None = None,
               front: FrontRole | None = None) -> FastAPI:
    """The app of one process that serves everything (tests, other ASGI servers), or, with `front`, of one
    front process of `jepa-serve` (service/front.py). `config`: `Settings(...).config`; None = the environment's.
    `data_dir_lock`: the local data directory's lock when the caller already holds it; without one the lifespan
    takes it (service/index/dirlock.py)."""
    config = config or Settings().config
    app = FastAPI(
        title="jepa-serve",
        version=_version(),
        summary="Embeddings, similarity search and latent prediction for JEPA models",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.config = config
    app.state.data_dir_lock = data_dir_lock
    app.state.front = front
    # Stops the process and sets the exit status when start-up gives up (the core process sets it). None in
    # process (tests, other ASGI servers): the app then stays up with /readyz 503 "failed".
    app.state.stop_process = None
    app.state.metrics = Metrics()
    gate: Gate = LocalGate()
    limiter = None
    if front is not None:
        app.state.core_link = link = CoreLink(front.core_path, on_state=lambda state: None)
        gate = front.counts.requests.gate(front.index)
        limiter = RemoteLimiter(link, config.security.rate_limit.requests, config.security.rate_limit.window_s)
    app.state.guard = Guard.from_config(config.security, app.state.metrics, local_limiter=limiter)
    install_error_handlers(app)
    for router in (embed.router, collections.router, search.router, classify.router, predict.router, plan.router,
                   surprise.router, stream.router, health.router, models.router, metrics.router, limits.router):
        app.include_router(router)
    install_docs(app, config.security, config.limits)
    install_ui(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.limits.max_body_bytes)
    app.add_middleware(ConcurrencyLimitMiddleware, limit=config.limits.max_concurrent_requests,
                       metrics=app.state.metrics, gate=gate)
    app.add_middleware(AuthMiddleware, guard=app.state.guard)
    app.add_middleware(RequestLogMiddleware, metrics=app.state.metrics, access_log=config.logging.access_log,
                       front=None if front is None else front.index)
    return app
