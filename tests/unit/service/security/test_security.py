"""API keys, the scope policy and the rate limiters, without HTTP."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest

from service.security import ApiKey, InProcessLimiter, KeyRing, RedisLimiter, hash_key, new_key, required_scope
from service.settings import Settings
from tests.support.toolkit import free_port


def test_keyring_verifies_by_hash_and_ignores_near_misses():
    key = new_key()
    ring = KeyRing([ApiKey.parse(f"ci:{hash_key(key)}:read,write")])
    found = ring.verify(key)
    assert found is not None
    assert found.name == "ci"
    assert found.scopes == {"read", "write"}
    assert ring.verify(key[:-1]) is None
    assert ring.verify(key + "x") is None
    assert ring.verify("") is None
    assert ring.verify(hash_key(key)) is None, "the configured hash itself must not work as a key"


def test_keyring_from_inline_and_file(tmp_path):
    a, b = new_key(), new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\nb:{hash_key(b)}:read  # trailing comment\n\n")
    ring = KeyRing.from_config(f"a:{hash_key(a)}:write", keys_file)
    assert len(ring) == 2
    assert ring.verify(a).name == "a"
    assert ring.verify(b).name == "b"
    assert not KeyRing.from_config("", None).enabled


@pytest.mark.parametrize(("entry", "message"), [
    ("ci:jepa_plainkey:read", "sha256"),
    ("ci:" + "0" * 64 + ":read,root", "scopes"),
    ("ci:" + "0" * 64, "name:sha256hex:scopes"),
    ("bad name:" + "0" * 64 + ":read", "name"),
])
def test_bad_key_entries_are_refused(entry, message):
    with pytest.raises(ValueError, match=message):
        ApiKey.parse(entry)


def test_duplicate_names_or_keys_are_refused():
    h = hash_key("k")
    with pytest.raises(ValueError, match="unique"):
        KeyRing.from_config(f"a:{h}:read;a:{hash_key('j')}:read", None)
    with pytest.raises(ValueError, match="twice"):
        KeyRing.from_config(f"a:{h}:read;b:{h}:write", None)


def test_secrets_are_redacted_in_settings_and_key_repr():
    digest = hash_key("secret-key")
    settings = Settings(api_keys=f"ci:{digest}:read", rate_limit_redis_url="redis://:hunter2@redis:6379/0")
    text = repr(settings) + str(settings) + repr(settings.config)  # the groups the processes receive, too
    assert digest not in text
    assert "hunter2" not in text
    assert digest not in repr(ApiKey.parse(f"ci:{digest}:read"))


@pytest.mark.parametrize(
    ("path", "method", "scope"),
    [
        ("/embed", "POST", "read"),
        ("/search", "POST", "read"),
        ("/predict_future", "POST", "read"),
        ("/collections", "GET", "read"),
        ("/collections/c/points/p", "GET", "read"),
        ("/models", "GET", "read"),
        ("/collections/c", "PUT", "write"),
        ("/collections/c", "DELETE", "write"),
        ("/collections/c/points", "POST", "write"),
        ("/collections/c/points", "DELETE", "write"),
        ("/something-new", "POST", "write"),
        ("/search/", "POST", "write"),
    ],
)
def test_policy(path, method, scope):
    assert required_scope(path, method, health_open=True, metrics_open=True) == scope


def test_policy_ops_routes_follow_their_settings():
    for path in ("/healthz", "/readyz"):
        assert required_scope(path, "GET", health_open=True, metrics_open=False) is None
        assert required_scope(path, "GET", health_open=False, metrics_open=True) == "ops"
    assert required_scope("/metrics", "GET", health_open=False, metrics_open=True) is None
    assert required_scope("/metrics", "GET", health_open=True, metrics_open=False) == "ops"


def test_in_process_limiter_fixed_window():
    now = [1000.0]
    limiter = InProcessLimiter(2, 10.0, clock=lambda: now[0])
    decisions = [asyncio.run(limiter.hit("k")) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[2].retry_after_s == pytest.approx(10.0)
    assert asyncio.run(limiter.hit("other")).allowed
    now[0] += 10.0  # next window
    assert asyncio.run(limiter.hit("k")).allowed


@pytest.fixture
def redis_url(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def test_redis_limiter_is_shared_by_replicas(redis_url):
    async def scenario():
        # two limiters = two replicas sharing one Redis: the budget is per key across both
        a, b = RedisLimiter(redis_url, 3, 60.0), RedisLimiter(redis_url, 3, 60.0)
        try:
            results = [await (a if i % 2 else b).hit("key:ci") for i in range(5)]
            other = await a.hit("key:other")
        finally:
            await a.aclose()
            await b.aclose()
        return results, other

    results, other = asyncio.run(scenario())
    assert [r.allowed for r in results] == [True, True, True, False, False]
    assert 0 < results[-1].retry_after_s <= 60
    assert other.allowed


def test_redis_limiter_fails_open_when_redis_is_down():
    errors = []

    async def scenario():
        limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", 1, 1.0, on_error=lambda: errors.append(1))
        try:
            return [await limiter.hit("k") for _ in range(3)]
        finally:
            await limiter.aclose()

    assert all(d.allowed for d in asyncio.run(scenario()))
    assert len(errors) == 3
