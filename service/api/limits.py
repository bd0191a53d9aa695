"""GET /limits: the request limits a client sizes its batches by (the Python client chunks upserts with them)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ServicesDep
from service.api.schemas import Limits

router = APIRouter(tags=["health"])


@router.get("/limits", response_model=Limits, summary="Request limits of this server")
async def limits(services: ServicesDep) -> Limits:
    return Limits.model_validate(services.settings.model_dump(include=set(Limits.model_fields)))
