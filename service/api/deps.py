"""FastAPI dependencies: typed access to the lifespan-built Services."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReady
from service.state import Services


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("service is starting")
    return services


def get_ready_services(request: Request) -> Services:
    services = get_services(request)
    if not services.ready:
        raise NotReady("service is not ready", {"hint": "see /readyz"})
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
ReadyServicesDep = Annotated[Services, Depends(get_ready_services)]
