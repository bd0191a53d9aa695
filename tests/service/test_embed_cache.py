"""The content-addressed embedding cache: `cached` per input, equal vectors, hit/miss metrics, both backends."""

import uuid

import numpy as np
import pytest

from service.embed_cache import MemoryEmbeddingCache, RedisEmbeddingCache, cache_key
from service.media.payload import RawImage, RawTensor
from tests.support.toolkit import b64


@pytest.fixture
def model_repository(fake_repository):
    """The torch-free fake model: these tests are about the HTTP edge, not what a real model computes."""
    return fake_repository


def metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_repeated_inputs_are_cached_and_equal(client, photos):
    first = client.post("/embed", json={"inputs": [{"image": b64(photos["coffee"])}, {"image": b64(photos["rocket"])}]}).json()
    assert first["cached"] == [False, False]
    again = client.post("/embed", json={"inputs": [{"image": b64(photos["rocket"])}, {"image": b64(photos["chelsea"])},
                                                   {"image": b64(photos["coffee"])}]}).json()
    assert again["cached"] == [True, False, True]
    np.testing.assert_array_equal(again["embeddings"][0], first["embeddings"][1])
    np.testing.assert_array_equal(again["embeddings"][2], first["embeddings"][0])
    assert metric(client, "jepa_embed_cache_hits_total") == 2
    assert metric(client, "jepa_embed_cache_misses_total") == 3
    # Unnormalised output of a cached input is still the raw vector, not the normalised one.
    raw = client.post("/embed", json={"inputs": [{"image": b64(photos["coffee"])}], "normalize": False}).json()
    assert raw["cached"] == [True]
    assert np.linalg.norm(raw["embeddings"][0]) != pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(np.asarray(raw["embeddings"][0]) / np.linalg.norm(raw["embeddings"][0]),
                               first["embeddings"][0], rtol=1e-5, atol=1e-6)
    # Token output needs the full forward pass: never served from the cache.
    tokens = client.post("/embed", json={"inputs": [{"image": b64(photos["coffee"])}], "output": "tokens"}).json()
    assert tokens["cached"] == [False] and tokens["tokens"]


def test_cache_off_reports_nothing_cached(settings_factory, photos):
    from tests.conftest import serving

    with serving(settings_factory(embed_cache="off")) as client:
        for _ in range(2):
            body = client.post("/embed", json={"inputs": [{"image": b64(photos["coffee"])}]}).json()
            assert body["cached"] == [False]


def test_keys_separate_spaces_kinds_and_bytes():
    image = RawImage(b"\x89PNG...")
    assert cache_key(image, "space-a") == cache_key(RawImage(b"\x89PNG..."), "space-a")
    assert cache_key(image, "space-a") != cache_key(image, "space-b")
    assert cache_key(image, "space-a") != cache_key(RawImage(b"\x89PNG..!"), "space-a")
    assert cache_key(RawTensor(b"\0" * 8, "float32", (2,)), "s") != cache_key(RawTensor(b"\0" * 8, "float16", (4,)), "s")


def test_memory_cache_evicts_least_recently_used():
    cache = MemoryEmbeddingCache(max_entries=2)
    cache.put_many(["a", "b"], np.eye(2, dtype=np.float32))
    cache.get_many(["a"])  # a is now the most recent
    cache.put_many(["c"], np.ones((1, 2), np.float32))
    assert [v is not None for v in cache.get_many(["a", "b", "c"])] == [True, False, True]


def test_redis_cache_roundtrip_and_failure_is_a_miss():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(socket_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no redis at 127.0.0.1:6379")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    cache = RedisEmbeddingCache("redis://127.0.0.1:6379/0", prefix, ttl_s=60)
    vectors = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    cache.put_many(["k1", "k2"], vectors)
    got = cache.get_many(["k2", "nope", "k1"])
    np.testing.assert_array_equal(got[0], vectors[1])
    assert got[1] is None
    np.testing.assert_array_equal(got[2], vectors[0])
    redis.Redis().delete(f"{prefix}:embcache:k1", f"{prefix}:embcache:k2")
    broken = RedisEmbeddingCache("redis://127.0.0.1:1/0", prefix, ttl_s=60)
    assert broken.get_many(["k1"]) == [None]
    broken.put_many(["k1"], vectors[:1])  # no exception
