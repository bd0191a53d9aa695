"""The narrow interface every collection store implements, and the factory that picks one from the collections
settings.

A store owns durability; the collections it hands out (`get`) are searched
directly. local and redis hand out in-process FAISS collections; milvus hands
out handles whose reads and searches go to the Milvus engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from service.index.collection import CollectionConfig, Hit, Metadata
from service.index.device_search import SearchDevice
from service.index.dirlock import DataDirLock

if TYPE_CHECKING:
    from service.config import CollectionsConfig


class SearchableCollection(Protocol):
    """What the API reads and searches: a FAISS `Collection` in this process, or a handle on a Milvus collection.

    `count`, `memory_bytes` and `get` may ask a remote engine: call them off the event loop.
    """

    config: CollectionConfig

    @property
    def count(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def index_in_use(self) -> str: ...
    @property
    def tombstones(self) -> int: ...
    def prepare_vectors(self, vectors: np.ndarray) -> np.ndarray: ...
    def get(self, point_id: str) -> tuple[np.ndarray, Metadata]: ...
    def search(self, queries: np.ndarray, k: int, exclude: Sequence[str | None] = (),
               filter: Mapping[str, Any] | None = None,
               params: Mapping[str, Any] | None = None) -> list[list[Hit]]: ...


class CollectionBackend(Protocol):
    recovered: bool  # /readyz waits for this
    failures: dict[str, str]  # collections that could not be loaded, with why

    def recover(self) -> None: ...
    def close(self) -> None: ...
    def names(self) -> list[str]: ...
    def get(self, name: str) -> SearchableCollection: ...  # a front asks the core: call it off the loop
    def create(self, config: CollectionConfig) -> tuple[SearchableCollection, bool]: ...
    def drop(self, name: str) -> None: ...
    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata]) -> int: ...
    def delete(self, name: str, ids: Sequence[str]) -> int: ...


def open_store(config: CollectionsConfig, data_dir_lock: DataDirLock | None = None) -> CollectionBackend:
    """The backend named by `config.storage`, not yet recovered. local and redis search their flat collections on
    the device `config.search` names (none: FAISS on the CPU); Milvus searches its own.

    The local backend owns its data directory exclusively: it takes `data_dir_lock` (the CLI takes it
    before the server starts, so a refusal is one line) or acquires it here (raising `DataDirLocked`).
    """
    if config.storage == "redis":
        from service.index.redis_store import RedisCollectionStore

        redis = config.redis
        return RedisCollectionStore(
            redis.url, prefix=redis.prefix, stream_maxlen=redis.stream_maxlen, ack_wait_s=redis.ack_wait_s,
            device=SearchDevice.from_config(config.search),
        )
    if config.storage == "milvus":
        try:
            from service.index.milvus_store import MilvusCollectionStore
        except ImportError as exc:  # an optional dependency: imported only when selected
            raise RuntimeError("JEPA_STORAGE=milvus needs the milvus extra: pip install 'jepa-serve[milvus]'") from exc

        milvus = config.milvus
        if "://" not in milvus.uri:
            Path(milvus.uri).parent.mkdir(parents=True, exist_ok=True)
        return MilvusCollectionStore(
            milvus.uri, token=milvus.token.get_secret_value(), db_name=milvus.db_name, prefix=milvus.prefix,
            timeout_s=milvus.timeout_s, refresh_s=milvus.refresh_s,
        )
    from service.index.store import CollectionStore

    lock = data_dir_lock or DataDirLock.acquire(config.data_dir)
    return CollectionStore(config.data_dir, fsync=config.fsync, lock=lock,
                           device=SearchDevice.from_config(config.search))
