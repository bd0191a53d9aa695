"""Content-addressed cache of pooled embeddings: the same bytes through the same model give the same vector.

The key hashes the input bytes (and, for raw tensors, dtype and shape) with
the embedding space id and the output kind, so a new checkpoint,
preprocessing or pooling (a new space id) never reads an old entry. Values
are the raw pooled float32 vectors; normalisation is applied after.

Two implementations of one small interface: an in-process LRU, and Redis
(shared by every replica). A cache failure is a miss, never a failed request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from service.config import CacheConfig
from service.media.payload import MediaItem, RawClip, RawImage

log = logging.getLogger(__name__)


def cache_key(item: MediaItem, space_id: str, output: str = "pooled") -> str:
    digest = hashlib.sha256()
    digest.update(f"jepa-embed-v1\0{space_id}\0{output}\0".encode())
    if isinstance(item, RawImage):
        digest.update(b"image\0")
        digest.update(item.data)
    elif isinstance(item, RawClip):
        digest.update(f"clip\0{len(item.frames)}\0".encode())
        for frame in item.frames:  # lengths first: frame boundaries are part of the content
            digest.update(f"{len(frame)}\0".encode())
            digest.update(frame)
    else:
        digest.update(f"tensor\0{item.dtype}\0{list(item.shape)}\0".encode())
        digest.update(item.data)
    return digest.hexdigest()


class EmbeddingCache(Protocol):
    backend: str

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...
    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None: ...
    def close(self) -> None: ...


class MemoryEmbeddingCache:
    backend = "memory"

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        with self._lock:
            found = []
            for key in keys:
                vector = self._entries.get(key)
                if vector is not None:
                    self._entries.move_to_end(key)
                found.append(vector)
            return found

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        with self._lock:
            for key, vector in zip(keys, vectors, strict=True):
                self._entries[key] = np.array(vector, np.float32)  # a copy: callers may reuse their buffer
                self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def close(self) -> None:
        """Nothing held outside the process."""


class RedisEmbeddingCache:
    backend = "redis"

    def __init__(self, url: str, prefix: str, ttl_s: int) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2)
        self._errors = redis.RedisError
        self._prefix = f"{prefix}:embcache:"
        self._ttl = ttl_s

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        try:
            blobs = self._redis.mget([self._prefix + k for k in keys])
        except self._errors as exc:
            log.warning("embedding cache read failed (%s): treated as misses", exc)
            return [None] * len(keys)
        return [None if blob is None else np.frombuffer(blob, np.float32) for blob in blobs]

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for key, vector in zip(keys, vectors, strict=True):
                    pipe.set(self._prefix + key, np.ascontiguousarray(vector, np.float32).tobytes(), ex=self._ttl)
                pipe.execute()
        except self._errors as exc:
            log.warning("embedding cache write failed (%s)", exc)

    def close(self) -> None:
        self._redis.close()


def open_cache(config: CacheConfig) -> EmbeddingCache | None:
    """The cache `config.backend` names (JEPA_EMBED_CACHE, with auto decided: service/config.py); None when off."""
    if config.backend == "off":
        return None
    if config.backend == "redis":
        return RedisEmbeddingCache(config.redis_url, config.redis_prefix, config.ttl_s)
    return MemoryEmbeddingCache(config.entries)
