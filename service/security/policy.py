"""Which scope a request needs, from its raw path and method: a new route cannot be left open by mistake.

- `read`: everything that computes or reads (GET, /embed, /search, /predict_future, /plan, /surprise, /classify,
  the /stream/surprise WebSocket).
- `write`: everything that changes stored data (collection and point writes).
- `ops`: /healthz, /readyz, /metrics when they are not open (settings health_open / metrics_open).

An unknown mutating route needs `write`, the stricter scope: forgetting to list
a new read-only POST costs a 403, never an unprotected write.
"""

from __future__ import annotations

READ = "read"
WRITE = "write"
OPS = "ops"
SCOPES = frozenset({READ, WRITE, OPS})

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
METRICS_PATHS = frozenset({"/metrics"})
# POST routes that compute an answer and store nothing.
READ_ONLY_POSTS = frozenset({"/embed", "/search", "/predict_future", "/plan", "/surprise", "/classify"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_scope(path: str, method: str, *, health_open: bool, metrics_open: bool) -> str | None:
    """The scope a request path needs; None = open to anyone. Exact paths only: anything else is not open."""
    if path in HEALTH_PATHS:
        return None if health_open else OPS
    if path in METRICS_PATHS:
        return None if metrics_open else OPS
    if method.upper() in SAFE_METHODS or path in READ_ONLY_POSTS:
        return READ
    return WRITE
