"""FastAPI dependencies: typed access to the lifespan-built Services, and the request's deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from service.api.schemas import MAX_TIMEOUT_MS
from service.errors import ErrorCode, InvalidInput, NotReady
from service.state import Services

# The dependencies are `async def` although they never wait: FastAPI runs a plain `def` dependency on a worker
# thread, and two thread hand-offs per request cost the event loop more than the rest of the routing (measured
# with py-spy on a front under load).


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("service is starting")
    return services


async def get_ready_services(request: Request) -> Services:
    services = await get_services(request)
    if not services.ready:
        raise NotReady("service is not ready", {"hint": "see /readyz"})
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
ReadyServicesDep = Annotated[Services, Depends(get_ready_services)]


@dataclass(frozen=True)
class RequestDeadline:
    """When a request must be answered by: its body's `timeout_ms`, else the X-Request-Timeout-Ms header, else the
    server's default, counted from when the request arrived. The header is read only when the body names no
    timeout, so a bad header next to a body timeout is ignored."""

    arrived: float  # time.perf_counter()
    header: str | None
    default_ms: float | None

    def at(self, timeout_ms: float | None = None) -> float | None:
        """The deadline as a perf_counter instant, or None for none."""
        if timeout_ms is None and self.header is not None:
            try:
                timeout_ms = float(self.header)
            except ValueError:
                raise InvalidInput("X-Request-Timeout-Ms must be a number of milliseconds",
                                   code=ErrorCode.INVALID_TIMEOUT) from None
            if not 0 < timeout_ms < MAX_TIMEOUT_MS:
                raise InvalidInput(f"X-Request-Timeout-Ms must be between 0 and {MAX_TIMEOUT_MS}",
                                   code=ErrorCode.INVALID_TIMEOUT)
        if timeout_ms is None:
            timeout_ms = self.default_ms
        return None if timeout_ms is None else self.arrived + timeout_ms / 1000.0


async def request_deadline(
    services: ServicesDep,
    x_request_timeout_ms: Annotated[str | None, Header(
        description="deadline in milliseconds, (0, 3600000); past it the answer is 504 (a body `timeout_ms` wins)",
    )] = None,
) -> RequestDeadline:
    return RequestDeadline(time.perf_counter(), x_request_timeout_ms, services.config.limits.request_timeout_ms or None)


DeadlineDep = Annotated[RequestDeadline, Depends(request_deadline)]
