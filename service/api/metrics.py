"""GET /metrics: the Prometheus exposition (service/metrics.py): the app's registry, or every process's samples."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    body, media_type = services.metrics.exposition()
    return Response(body, media_type=media_type)
