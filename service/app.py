"""App factory and lifespan: everything is built per app, nothing at import time.

The lifespan returns at once and brings the models up in a background task, so
/healthz answers while engines load and warm, and /readyz reports the phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
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
from service.embed_cache import open_cache
from service.errors import StorageUnavailable
from service.index.backend import open_store
from service.index.dirlock import DataDirLock
from service.logs import RequestLogMiddleware
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, ConcurrencyLimitMiddleware, MetricsMiddleware
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
    settings = services.settings
    if settings.providers in ("tensorrt", "tensorrt_native"):
        services.phase = "building_engine"  # plans are built (or read from the cache) while loading
    # Start-up has its own thread: loading and warming take minutes and must not hold a storage or decode thread.
    startup = ThreadPoolExecutor(1, thread_name_prefix="startup")
    loop = asyncio.get_running_loop()
    try:
        entries, failures = await loop.run_in_executor(startup, scan_repository, settings.model_repository)
        await loop.run_in_executor(startup, services.models.load, entries, failures, settings, services.metrics)
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
        services.models.start()
        if settings.warmup:
            services.phase = "warming"
            await loop.run_in_executor(startup, services.models.warm_up)
    except Exception:
        log.exception("start-up failed")
        give_up(services, EXIT_STARTUP_FAILED)
        return
    finally:
        startup.shutdown(wait=False)
    services.phase = "ready" if len(services.models) else "failed"
    log.info("%s: %d model(s) %s; failed: %s", services.phase, len(services.models),
             [m.name for m in services.models], services.models.failures or "none")


async def recover_with_retry(services: Services) -> bool:
    """Recover the collections; while their backend (Redis) cannot be reached, retry with doubling waits and say why
    in /readyz. False once `startup_give_up_s` has passed without success."""
    settings = services.settings
    deadline = time.monotonic() + settings.startup_give_up_s
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
                    "start-up gave up after %d attempt(s) in %.0f s: %s", attempt, settings.startup_give_up_s, exc
                )
                services.retrying = {"reason": str(exc), "attempts": attempt, "gave_up": True}
                return False
            services.phase = "waiting_for_backend"
            services.retrying = {
                "reason": str(exc), "attempts": attempt, "next_attempt_in_s": round(min(wait_s, left_s), 2),
                "give_up_in_s": round(left_s, 1),
            }
            log.warning("start-up: %s; attempt %d, retrying in %.2f s (giving up in %.0f s)",
                        exc, attempt, min(wait_s, left_s), left_s)
            await asyncio.sleep(min(wait_s, left_s))
            wait_s = min(wait_s * 2, settings.startup_retry_max_s)
            continue
        if attempt > 1:
            log.info("start-up: the backend answered after %d attempt(s)", attempt)
        services.phase, services.retrying = phase, None
        return True


def give_up(services: Services, exit_code: int) -> None:
    """Start-up cannot complete: not ready, and under `jepa-serve` the process exits with `exit_code`."""
    services.phase = "failed"
    if services.stop_process is not None:
        log.error("exiting with status %d so that the orchestrator restarts this process", exit_code)
        services.stop_process(exit_code)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    services = Services(
        settings=settings, metrics=app.state.metrics, models=ModelPool(),
        store=open_store(settings, app.state.data_dir_lock),
        executors=Executors.from_settings(settings),
        stop_process=app.state.stop_process,
    )
    services.embed_cache = open_cache(settings)
    app.state.services = services
    startup = asyncio.create_task(bring_up(services), name="bring-up")
    try:
        yield
    finally:
        # Graceful shutdown: uvicorn has stopped accepting and finished in-flight requests (or hit
        # shutdown_timeout_s); now drain the batch queues, snapshot + close every write-ahead log.
        services.phase = "stopping"
        startup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await startup
        log.info("shutting down: draining batch queues")
        await services.models.stop()
        collections = len(services.store.names())
        services.store.close()
        if services.embed_cache is not None:
            services.embed_cache.close()
        services.executors.shutdown()
        await app.state.guard.aclose()
        log.info("shutdown complete: batch queues drained, %d collection(s) snapshotted and closed", collections)


def create_app(settings: Settings | None = None, data_dir_lock: DataDirLock | None = None) -> FastAPI:
    """`data_dir_lock`: the local data directory's lock when the caller (the CLI) already holds it;
    without one the lifespan takes it (service/index/dirlock.py)."""
    settings = settings or Settings()
    app = FastAPI(
        title="jepa-serve",
        version=_version(),
        summary="Embeddings, similarity search and latent prediction for JEPA models",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.data_dir_lock = data_dir_lock
    # Set by `jepa-serve` (service/cli.py): stops the server and sets the exit status when start-up gives up.
    # None in process (tests, other ASGI servers): the app then stays up with /readyz 503 "failed".
    app.state.stop_process = None
    app.state.metrics = Metrics()
    app.state.guard = Guard.from_settings(settings, app.state.metrics)
    install_error_handlers(app)
    for router in (embed.router, collections.router, search.router, classify.router, predict.router, plan.router,
                   surprise.router, stream.router, health.router, models.router, metrics.router, limits.router):
        app.include_router(router)
    install_docs(app, settings)
    install_ui(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings.max_concurrent_requests, metrics=app.state.metrics)
    app.add_middleware(AuthMiddleware, guard=app.state.guard)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestLogMiddleware, access_log=settings.access_log)
    return app
