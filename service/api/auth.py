"""Auth as pure ASGI middleware: key, scope and rate limit are checked before the body is read.

A FastAPI dependency would run only after FastAPI has read (up to
max_body_bytes) and parsed the body, so an anonymous client could make a
replica buffer 64 MB, or get a 400 instead of a 401. The scope is decided from
the raw path and method (service/security/policy.py), before routing, so it
fails closed: a path the policy does not know needs a key like any other.

WebSocket handshakes are checked the same way (as a GET: the `read` scope); a refused one is closed before it is
accepted with 1008 (policy violation), or 1013 (try again later) when rate limited, and the error as the reason.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import handle_service_error
from service.errors import ServiceError
from service.logs import PRINCIPAL_SCOPE_KEY, tag_span
from service.security.guard import Guard

# FastAPI's own pages: the API's description is not a secret, and Swagger UI cannot send a key to fetch it.
# /ui (service/api/ui.py) holds no data either: the page asks for a key and sends it with every call it makes.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/ui"})
DOCS_ASSETS = ("/docs/assets/", "/ui/assets/")  # the pages' scripts and styles, served locally


class AuthMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or path in DOCS_PATHS or path.startswith(DOCS_ASSETS):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope.get("headers", ())).get(b"authorization")
        client = scope.get("client")
        try:
            principal = await self.guard.check(
                scope["path"], scope.get("method", "GET"), authorization.decode("latin-1") if authorization else None,
                client[0] if client else "unknown",
            )
        except ServiceError as exc:
            if scope["type"] == "websocket":
                await receive()  # websocket.connect
                code = 1013 if exc.status == 429 else 1008
                reason = f"{exc.code.value}: {exc.message}"[:120]  # a close reason is at most 123 bytes
                await send({"type": "websocket.close", "code": code, "reason": reason})
                return
            response = await handle_service_error(Request(scope), exc)
            await response(scope, receive, send)
            return
        if principal is not None:
            scope[PRINCIPAL_SCOPE_KEY] = principal.name  # for the access log: the key's name, never the key
            tag_span(**{"jepa.key": principal.name})
        await self.app(scope, receive, send)
