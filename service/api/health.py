"""Liveness, readiness, the model list and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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


@router.get("/models", summary="Served models, their contracts and runtimes")
async def list_models(services: ServicesDep) -> dict[str, Any]:
    models = []
    for model in services.models:
        m = model.manifest
        models.append(
            {
                "name": model.name,
                "family": m.family,
                "space_id": m.space_id,
                "dim": m.output.dim,
                "token_grid": list(m.output.token_grid),
                "pooling": m.output.pooling,
                "input": m.input.model_dump(),
                "predictor": m.predictor.model_dump() if m.predictor else None,
                "surprise": m.surprise.model_dump() if model.surprise is not None else None,
                "heads": {name: spec.model_dump() for name, spec in m.heads.items()},
                "components": {
                    b.component: {
                        "device": b.engine.device,
                        "precision": b.engine.precision,
                        "attention": m.components[b.component].attention.get(b.engine.precision),
                        "parity": m.components[b.component].parity,
                    }
                    for b in model.batchers
                },
                "checkpoint_sha256": m.checkpoint_sha256,
            }
        )
    return {"models": models, "failed": services.models.failures}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
