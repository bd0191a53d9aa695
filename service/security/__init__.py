"""API keys (hashed, constant-time), route scopes and per-key rate limits."""

from service.security.keys import ApiKey, KeyRing, hash_key, new_key
from service.security.policy import OPS, READ, SCOPES, WRITE, required_scope
from service.security.ratelimit import InProcessLimiter, RateDecision, RateLimiter, RedisLimiter

__all__ = [
    "OPS",
    "READ",
    "SCOPES",
    "WRITE",
    "ApiKey",
    "InProcessLimiter",
    "KeyRing",
    "RateDecision",
    "RateLimiter",
    "RedisLimiter",
    "hash_key",
    "new_key",
    "required_scope",
]
