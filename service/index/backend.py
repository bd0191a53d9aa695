"""The narrow interface every collection store implements, and the factory that picks one from settings.

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
    from service.settings import Settings


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
               filter: Mapping[str, Any] | None = None,  # noqa: A002
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


def open_store(settings: Settings, data_dir_lock: DataDirLock | None = None) -> Any:
    """The backend named by `settings.storage`, not yet recovered. local and redis search their flat collections on
    the device `search_device` names (none: FAISS on the CPU); Milvus searches its own.

    The local backend owns its data directory exclusively: it takes `data_dir_lock` (the CLI takes it
    before the server starts, so a refusal is one line) or acquires it here (raising `DataDirLocked`).
    """
    if settings.storage == "redis":
        from service.index.redis_store import RedisCollectionStore

        return RedisCollectionStore(
            settings.redis_url, prefix=settings.redis_prefix, stream_maxlen=settings.redis_stream_maxlen,
            ack_wait_s=settings.redis_ack_wait_s, device=SearchDevice.from_settings(settings),
        )
    if settings.storage == "milvus":
        try:
            from service.index.milvus_store import MilvusCollectionStore
        except ImportError as exc:  # an optional dependency: imported only when selected
            raise RuntimeError("JEPA_STORAGE=milvus needs the milvus extra: pip install 'jepa-serve[milvus]'") from exc

        uri = settings.milvus_uri or str(settings.data_dir / "milvus.db")
        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        return MilvusCollectionStore(
            uri, token=settings.milvus_token.get_secret_value(), db_name=settings.milvus_db_name,
            prefix=settings.milvus_prefix, timeout_s=settings.milvus_timeout_s, refresh_s=settings.milvus_refresh_s,
        )
    from service.index.store import CollectionStore

    lock = data_dir_lock or DataDirLock.acquire(settings.data_dir)
    return CollectionStore(settings.data_dir, fsync=settings.fsync, lock=lock,
                           device=SearchDevice.from_settings(settings))
