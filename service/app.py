"""App factory and lifespan: everything is built per app, nothing at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI

from service.api import collections, embed, health, plan, predict, search
from service.api.errors import install_error_handlers
from service.index import CollectionStore
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, MetricsMiddleware
from service.model_pool import ModelPool
from service.repository import scan_repository
from service.settings import Settings
from service.state import Services

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return metadata.version("jepa-serve")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    entries, failures = scan_repository(settings.model_repository)
    models = ModelPool()
    models.load(entries, failures, settings, metrics)
    store = CollectionStore(settings.data_dir, fsync=settings.fsync)
    services = Services(
        settings=settings, metrics=metrics, models=models, store=store,
        decode_pool=ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode"),
    )
    app.state.services = services
    await services.run_blocking(store.recover)
    for name in store.names():
        metrics.index_points.labels(collection=name).set(store.get(name).count)
    models.start()
    services.ready = len(models) > 0
    log.info("serving %d model(s): %s; failed: %s", len(models), [m.name for m in models], models.failures or "none")
    try:
        yield
    finally:
        services.ready = False
        await models.stop()
        store.close()
        services.decode_pool.shutdown(wait=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="jepa-serve",
        version=_version(),
        summary="Embeddings, similarity search and latent prediction for JEPA models",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    for router in (embed.router, collections.router, search.router, predict.router, plan.router, health.router):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
