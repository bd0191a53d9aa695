"""The Guard: keys + scope policy + rate limiter, built once per app from the security settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.config import SecurityConfig
from service.errors import Forbidden, RateLimited, Unauthorized
from service.metrics import Metrics
from service.security.keys import KeyRing
from service.security.policy import required_scope
from service.security.ratelimit import InProcessLimiter, RateLimiter, RedisLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name, or `anonymous` when auth is off."""

    name: str
    scopes: frozenset[str]


class Guard:
    def __init__(self, keys: KeyRing, limiter: RateLimiter | None, metrics: Metrics, *,
                 health_open: bool, metrics_open: bool) -> None:
        self.keys = keys
        self.limiter = limiter
        self.metrics = metrics
        self.health_open = health_open
        self.metrics_open = metrics_open

    @classmethod
    def from_config(cls, security: SecurityConfig, metrics: Metrics,
                    local_limiter: RateLimiter | None = None) -> Guard:
        """Validates the key configuration now: a typo fails startup, not the first request. `local_limiter`: what
        counts in place of this process's own counters when there is no Redis (a front's: the core's count)."""
        keys = KeyRing.from_config(security.api_keys.get_secret_value(), security.api_keys_file)
        if security.api_keys_file is not None and not keys.enabled:
            # Someone meant auth to be on: an empty file must not silently open every route.
            raise ValueError(
                f"JEPA_API_KEYS_FILE={security.api_keys_file} holds no API key; refusing to start with auth off"
            )
        if not keys.enabled:
            log.warning("auth is off: no API key is configured, every route is open (see docs/deploy.md)")
        rate = security.rate_limit
        limiter: RateLimiter | None = None
        if rate.requests > 0:
            if rate.redis_url is not None:
                limiter = RedisLimiter(rate.redis_url.get_secret_value(), rate.requests, rate.window_s,
                                       on_error=metrics.rate_limiter_errors.inc)
            else:
                limiter = local_limiter or InProcessLimiter(rate.requests, rate.window_s)
        log.info("auth %s; rate limit %s", f"on ({len(keys)} key(s))" if keys.enabled else "off (no key configured)",
                 f"{rate.requests} per {rate.window_s:g} s per key, counted "
                 f"{'in redis' if isinstance(limiter, RedisLimiter) else 'in the server'}" if limiter else "off")
        return cls(keys, limiter, metrics, health_open=security.health_open, metrics_open=security.metrics_open)

    async def check(self, path: str, method: str, authorization: str | None, client: str) -> Principal | None:
        """The caller allowed on this route, or a 401 / 403 / 429 error. None = an open route."""
        scope = required_scope(path, method, health_open=self.health_open, metrics_open=self.metrics_open)
        if scope is None:
            return None
        if self.keys.enabled:
            principal = self._authenticate(authorization)
            if scope not in principal.scopes:
                self.metrics.auth_denied.labels(reason="scope").inc()
                raise Forbidden(f"key {principal.name!r} lacks the {scope!r} scope this route needs",
                                {"required_scope": scope, "key": principal.name})
            identity = f"key:{principal.name}"
        else:
            principal = Principal("anonymous", frozenset())
            identity = f"addr:{client}"
        if self.limiter is not None:
            decision = await self.limiter.hit(identity)
            if not decision.allowed:
                self.metrics.rate_limited.labels(key=principal.name if self.keys.enabled else "anonymous").inc()
                raise RateLimited(
                    f"rate limit of {self.limiter.limit} requests per {self.limiter.window_s:g} s reached",
                    retry_after_s=decision.retry_after_s,
                    detail={"limit": self.limiter.limit, "window_s": self.limiter.window_s},
                )
        return principal

    def _authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            self.metrics.auth_denied.labels(reason="missing").inc()
            raise Unauthorized("this route needs an API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.metrics.auth_denied.labels(reason="malformed").inc()
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        key = self.keys.verify(token.strip())
        if key is None:
            self.metrics.auth_denied.labels(reason="invalid").inc()
            raise Unauthorized("the API key is not valid")
        return Principal(key.name, key.scopes)

    async def aclose(self) -> None:
        if self.limiter is not None:
            await self.limiter.aclose()

