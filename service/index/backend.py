"""The narrow interface every collection store implements, and the factory that picks one from settings.

A store owns durability; the collections it hands out (`get`) are searched
directly. Another backend (Milvus, say) implements the same few methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from service.index.collection import Collection, CollectionConfig, Metadata

if TYPE_CHECKING:
    from service.settings import Settings


class CollectionBackend(Protocol):
    recovered: bool  # /readyz waits for this
    failures: dict[str, str]  # collections that could not be loaded, with why

    def recover(self) -> None: ...
    def close(self) -> None: ...
    def names(self) -> list[str]: ...
    def get(self, name: str) -> Collection: ...
    def create(self, config: CollectionConfig) -> tuple[Collection, bool]: ...
    def drop(self, name: str) -> None: ...
    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata]) -> int: ...
    def delete(self, name: str, ids: Sequence[str]) -> int: ...


def open_store(settings: Settings) -> Any:
    """The backend named by `settings.storage`, not yet recovered."""
    if settings.storage == "redis":
        from service.index.redis_store import RedisCollectionStore

        return RedisCollectionStore(
            settings.redis_url, prefix=settings.redis_prefix, stream_maxlen=settings.redis_stream_maxlen,
            ack_wait_s=settings.redis_ack_wait_s,
        )
    from service.index.store import CollectionStore

    return CollectionStore(settings.data_dir, fsync=settings.fsync)
