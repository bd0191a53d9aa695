"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive and its batchers run")
async def healthz(services: ServicesDep) -> JSONResponse:
    dead = [b.engine.name for m in services.models for b in m.batchers if services.ready and not b.running]
    if dead:
        return JSONResponse({"status": "unhealthy", "stopped_batchers": dead}, status_code=503)
    return JSONResponse({"status": "alive"})


@router.get("/readyz", summary="Models loaded and collections recovered")
async def readyz(services: ServicesDep) -> JSONResponse:
    body: dict[str, Any] = {
        "status": "ready" if services.ready else "not_ready",
        "phase": services.phase,
        "models": {m.name: "ready" for m in services.models}
        | {n: f"failed: {r}" for n, r in services.models.failures.items()},
        "collections_recovered": services.store.recovered,
        "collections_failed": services.store.failures,
    }
    if services.retrying is not None:
        body["retrying"] = services.retrying  # why start-up waits: the backend's error, attempts, give-up time
    return JSONResponse(body, status_code=200 if services.ready else 503)
