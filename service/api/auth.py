"""Auth as pure ASGI middleware: key, scope and rate limit are checked before the body is read.

A FastAPI dependency would run only after FastAPI has read (up to
max_body_bytes) and parsed the body, so an anonymous client could make a
replica buffer 64 MB, or get a 400 instead of a 401. The scope is decided from
the raw path and method (service/security/policy.py), before routing, so it
fails closed: a path the policy does not know needs a key like any other.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import handle_service_error
from service.errors import ServiceError
from service.logs import PRINCIPAL_SCOPE_KEY, tag_span
from service.security.guard import Guard

# FastAPI's own pages: the API's description is not a secret, and Swagger UI cannot send a key to fetch it.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
DOCS_ASSETS = "/docs/assets/"  # Swagger UI's and ReDoc's scripts and styles, served locally


class AuthMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in DOCS_PATHS or scope["path"].startswith(DOCS_ASSETS):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope.get("headers", ())).get(b"authorization")
        client = scope.get("client")
        try:
            principal = await self.guard.check(
                scope["path"], scope["method"], authorization.decode("latin-1") if authorization else None,
                client[0] if client else "unknown",
            )
        except ServiceError as exc:
            response = await handle_service_error(Request(scope), exc)
            await response(scope, receive, send)
            return
        if principal is not None:
            scope[PRINCIPAL_SCOPE_KEY] = principal.name  # for the access log: the key's name, never the key
            tag_span(**{"jepa.key": principal.name})
        await self.app(scope, receive, send)
