"""CollectionStore, local backend: config + snapshot + write-ahead log per collection.

Layout: `<data_dir>/collections/<name>/{config.json, snapshot.npz, wal.log}`. A snapshot holds the
points and, on the CPU, the serialised FAISS index over their internal keys: recovery loads it
instead of rebuilding (a 1M-point HNSW takes minutes to build); an index that cannot be read is
rebuilt from the points.
A write is logged (fsync) and then applied, under the collection's write
mutex, so the log order is the apply order. Upserts and deletes are
idempotent, so replaying a log over a newer snapshot is harmless: that is
what makes "snapshot, then truncate the log" safe without a sequence number.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.errors import Conflict, ErrorCode, InvalidInput, NotFound, StorageError
from service.index.collection import Collection, CollectionConfig, CollectionState, Metadata
from service.index.device_search import SearchDevice
from service.index.dirlock import DataDirLock
from service.index.wal import WalCorrupted, WriteAheadLog, decode_vectors, encode_vectors, fsync_dir

log = logging.getLogger(__name__)

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SNAPSHOT_EVERY_BYTES = 64 * 1024 * 1024


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidInput(
            "collection names are 1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit",
            {"name": name[:80]},
            code=ErrorCode.INVALID_COLLECTION_NAME,
        )
    return name


def write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    tmp.replace(path)
    if fsync:
        fsync_dir(path.parent)


@dataclass
class _Durable:
    """A collection with its log and the mutex that orders log + apply."""

    collection: Collection
    folder: Path
    wal: WriteAheadLog
    mutex: threading.Lock = field(default_factory=threading.Lock)
    snapshot_bytes: int = 0  # size of the last snapshot: the log may grow as large before the next one
    dropped: bool = False  # set under `mutex` by a drop: a write that waited for the mutex finds it gone (404)

    def check_live(self) -> None:
        """With `mutex` held: 404 when a drop won the race to it (its log is closed, its folder in the trash)."""
        if self.dropped:
            name = self.collection.config.name
            raise NotFound(f"collection {name!r} does not exist", code=ErrorCode.COLLECTION_NOT_FOUND)


class CollectionStore:
    def __init__(
        self, data_dir: Path, *, fsync: bool = True, snapshot_every_bytes: int = SNAPSHOT_EVERY_BYTES,
        snapshot_log_ratio: float = 1.0, lock: DataDirLock | None = None, device: SearchDevice | None = None,
    ) -> None:
        """A snapshot is taken when the log passes snapshot_every_bytes and snapshot_log_ratio x the last snapshot.
        `lock`: the data directory's exclusive lock (service/index/dirlock.py), released by `close()`; a server
        always passes one, tests and benchmarks that own a temporary folder may not. `device`: where flat collections
        are searched (device_search.py); None: FAISS on the CPU."""
        self.root = data_dir / "collections"
        self.device = device
        self._lock = lock
        self._fsync = fsync
        self._snapshot_every = snapshot_every_bytes
        self._snapshot_ratio = snapshot_log_ratio
        self._collections: dict[str, _Durable] = {}
        self._registry_lock = threading.Lock()
        self.failures: dict[str, str] = {}
        self.recovered = False

    # -- lifecycle ------------------------------------------------------------------

    def recover(self) -> None:
        """Load every collection from snapshot + log; a broken one is reported, the rest serve."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                self._collections[folder.name] = self._load(folder)
            except (OSError, ValueError, KeyError, WalCorrupted) as exc:
                log.error("collection %s not recovered: %s", folder.name, exc)
                self.failures[folder.name] = str(exc)
        self.recovered = True

    def close(self) -> None:
        with self._registry_lock:
            for durable in self._collections.values():
                with durable.mutex:
                    if durable.wal.size_bytes:
                        try:
                            self._snapshot(durable)
                        except OSError as exc:
                            # The log still holds every acknowledged write; the next start replays it.
                            log.warning("snapshot of %s at shutdown failed: %s", durable.collection.config.name, exc)
                    durable.wal.close()
                durable.collection.release_device()
            self._collections.clear()
            if self._lock is not None:
                self._lock.release()  # after the last snapshot: the next server may start now

    def _load(self, folder: Path) -> _Durable:
        config = CollectionConfig(**json.loads((folder / "config.json").read_text()))
        collection = Collection(config, device=self.device)
        snapshot = folder / "snapshot.npz"
        if snapshot.exists():
            with np.load(snapshot, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if "index" in data.files:
                    try:
                        collection.restore(CollectionState(
                            ids=meta["ids"], keys=data["keys"], vectors=data["vectors"], metadata=meta["metadata"],
                            index=data["index"], index_kind=meta["index_kind"], tombstones=data["tombstones"]))
                    except ValueError as exc:  # the points are all there: rebuild the index from them
                        log.warning("collection %s: stored index not used (%s); rebuilding it", config.name, exc)
                        collection = Collection(config, device=self.device)
                if collection.count == 0 and len(meta["ids"]):
                    collection.upsert(meta["ids"], data["vectors"], meta["metadata"])
        replayed = 0
        for record in WriteAheadLog.replay(folder / "wal.log"):
            self._apply(collection, record)
            replayed += 1
        log.info(
            "collection %s recovered: %d points (%d log records replayed)", config.name, collection.count, replayed
        )
        return _Durable(collection=collection, folder=folder, wal=WriteAheadLog(folder / "wal.log", self._fsync),
                        snapshot_bytes=snapshot.stat().st_size if snapshot.exists() else 0)

    @staticmethod
    def _apply(collection: Collection, record: dict) -> None:
        if record["op"] == "upsert":
            collection.upsert(record["ids"], decode_vectors(record["vectors"]), record["metadata"])
        elif record["op"] == "delete":
            collection.delete(record["ids"])
        else:
            raise ValueError(f"unknown log record {record['op']!r}")

    def _snapshot(self, durable: _Durable) -> None:
        state = durable.collection.export_state()
        meta = np.frombuffer(
            json.dumps({"ids": state.ids, "metadata": state.metadata, "index_kind": state.index_kind}).encode(),
            dtype=np.uint8,
        )
        arrays = {"vectors": state.vectors, "meta": meta}
        if state.index is not None:  # the FAISS index too, so recovery does not rebuild it
            arrays |= {"keys": state.keys, "tombstones": state.tombstones, "index": state.index}
        tmp = durable.folder / ".snapshot.tmp.npz"
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        durable.snapshot_bytes = tmp.stat().st_size
        tmp.replace(durable.folder / "snapshot.npz")
        if self._fsync:
            fsync_dir(durable.folder)
        durable.wal.reset()

    # -- collections ----------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._collections)

    def get(self, name: str) -> Collection:
        return self._durable(name).collection

    def _durable(self, name: str) -> _Durable:
        durable = self._collections.get(name)
        if durable is None:
            raise NotFound(f"collection {name!r} does not exist", code=ErrorCode.COLLECTION_NOT_FOUND)
        return durable

    def create(self, config: CollectionConfig) -> tuple[Collection, bool]:
        """Idempotent for an identical config; a different config under the same name is 409."""
        check_collection_name(config.name)
        collection = Collection(config, device=self.device)  # validates kind and parameters before any write
        with self._registry_lock:
            existing = self._collections.get(config.name)
            if existing is not None:
                if existing.collection.config != config:
                    raise Conflict(
                        f"collection {config.name!r} exists with another configuration",
                        {"existing": existing.collection.config.as_dict()},
                        code=ErrorCode.COLLECTION_EXISTS,
                    )
                return existing.collection, False
            folder = self.root / config.name
            if folder.exists():
                raise self._folder_taken(config.name)
            staging = self.root / f".new-{config.name}-{uuid.uuid4().hex}"
            try:
                staging.mkdir(parents=True)
                write_atomic(staging / "config.json", json.dumps(config.as_dict()).encode(), self._fsync)
                staging.replace(folder)
                if self._fsync:
                    fsync_dir(self.root)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # the folder appeared since the check above
                    raise self._folder_taken(config.name) from exc
                raise StorageError(f"cannot create collection: {exc.strerror}") from exc
            durable = _Durable(collection=collection, folder=folder, wal=WriteAheadLog(folder / "wal.log", self._fsync))
            self._collections[config.name] = durable
            return durable.collection, True

    def _folder_taken(self, name: str) -> Conflict:
        """The name's folder is on disk but not served: its recovery failed (or someone put it there by hand).
        Creating over it would mean deleting data, so the answer is 409 with the reason, never 507."""
        why = self.failures.get(name)
        message = f"collection {name!r} exists on disk but is not loaded"
        message += f" (recovery failed: {why})" if why else ""
        return Conflict(message + "; repair or remove its folder, then restart", {"name": name},
                        code=ErrorCode.COLLECTION_EXISTS)

    def drop(self, name: str) -> None:
        with self._registry_lock:
            durable = self._durable(name)
            with durable.mutex:
                durable.dropped = True
                durable.wal.close()
                trash = self.root / f".trash-{name}-{uuid.uuid4().hex}"
                durable.folder.replace(trash)
                del self._collections[name]
        durable.collection.release_device()
        shutil.rmtree(trash, ignore_errors=True)

    # -- points ---------------------------------------------------------------------

    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata]) -> int:
        durable = self._durable(name)
        prepared = durable.collection.prepare_vectors(vectors)
        record = {"op": "upsert", "ids": list(ids), "vectors": encode_vectors(prepared), "metadata": list(metadata)}
        with durable.mutex:
            durable.check_live()
            self._log(durable, record)
            durable.collection.upsert(ids, prepared, metadata)
            self._maybe_snapshot(durable)
        return len(set(ids))

    def delete(self, name: str, ids: Sequence[str]) -> int:
        durable = self._durable(name)
        with durable.mutex:
            durable.check_live()
            self._log(durable, {"op": "delete", "ids": list(ids)})
            deleted = durable.collection.delete(ids)
            self._maybe_snapshot(durable)
        return deleted

    def _log(self, durable: _Durable, record: dict) -> None:
        try:
            durable.wal.append(record)
        except OSError as exc:
            raise StorageError(
                f"write not stored: the write-ahead log could not be written ({exc.strerror}); nothing was applied"
            ) from exc

    def _maybe_snapshot(self, durable: _Durable) -> None:
        # Snapshot when the log outgrows both the threshold and the last snapshot: a snapshot rewrites the whole
        # collection, so a fixed threshold would make bulk loading quadratic (1M x 384-d: a 3 GB snapshot every
        # 4 upserts of 10,000); this way the bytes snapshotted stay within about twice the bytes logged, and
        # recovery replays at most about a snapshot's worth of log.
        if durable.wal.size_bytes < max(self._snapshot_every, self._snapshot_ratio * durable.snapshot_bytes):
            return
        try:
            self._snapshot(durable)
        except OSError as exc:
            # The log still holds every write; a failed snapshot costs only replay time.
            log.warning("snapshot of %s failed: %s", durable.collection.config.name, exc)
