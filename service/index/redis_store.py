"""CollectionStore, redis backend: Redis is the source of truth; every replica tails it into its own FAISS copy.

Keys (prefix `jepa` by default; `E` is the collection's epoch, new on every create, so a drop
and a re-create under the same name never mix):
  {p}:collections          hash   name -> {"config": ..., "epoch": E}
  {p}:control              stream create / drop events
  {p}:c:{name}:{E}:points  hash   point id -> float32 vector bytes + metadata JSON
  {p}:c:{name}:{E}:log     stream one entry per write: op + ids (no vectors: they are in the hash)

A write is one MULTI/EXEC (hash + stream entry); it is acknowledged when
EXEC returns, so its durability is Redis's (see docs/collections.md for the
loss window of each persistence setting). The replica that took the write
then waits until its own tailer has applied that stream entry, so a client
reads its own writes.

The tailer (one thread per replica) XREADs the control stream and every
collection log. For the ids of an entry it reads the points' *current*
values from the hash: an id that is gone is deleted locally, one that is
there is upserted. Reading the current value rather than the value at the
time of the entry makes applying entries idempotent and order-insensitive,
so a replica that loads the hash and then replays the log from a mark taken
before the load converges to Redis's state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis

from service.errors import Conflict, ErrorCode, NotFound, StorageUnavailable
from service.index.collection import Collection, CollectionConfig, Metadata
from service.index.device_search import SearchDevice
from service.index.store import check_collection_name

log = logging.getLogger(__name__)

LOAD_BATCH = 5000
BLOCK_MS = 200


def stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def pack_point(vector: np.ndarray, metadata: Metadata) -> bytes:
    return np.ascontiguousarray(vector, np.float32).tobytes() + json.dumps(metadata, separators=(",", ":")).encode()


def unpack_point(blob: bytes, dim: int) -> tuple[np.ndarray, Metadata]:
    return np.frombuffer(blob[: 4 * dim], np.float32), json.loads(blob[4 * dim :])


class _Replica:
    """One collection as this process holds it: its epoch, keys and the last log entry applied."""

    def __init__(self, collection: Collection, epoch: str, prefix: str) -> None:
        self.collection = collection
        self.epoch = epoch
        base = f"{prefix}:c:{collection.config.name}:{epoch}"
        self.points_key = f"{base}:points"
        self.log_key = f"{base}:log"
        self.applied = "0-0"


class RedisCollectionStore:
    def __init__(
        self, url: str, *, prefix: str = "jepa", stream_maxlen: int = 1_000_000, ack_wait_s: float = 5.0,
        device: SearchDevice | None = None,
    ) -> None:
        """`device`: where flat collections are searched (device_search.py); None: FAISS on the CPU."""
        self.device = device
        self._redis = redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30)
        self._tail_redis = redis.Redis.from_url(url, socket_timeout=BLOCK_MS / 1000 + 10)
        self._prefix = prefix
        self._registry = f"{prefix}:collections"
        self._control = f"{prefix}:control"
        self._maxlen = stream_maxlen
        self._ack_wait = ack_wait_s
        self._replicas: dict[str, _Replica] = {}
        self._lock = threading.Lock()
        self._applied = threading.Condition(self._lock)
        self._control_applied = "0-0"
        self._stop = threading.Event()
        self._tailer: threading.Thread | None = None
        self.failures: dict[str, str] = {}
        self.recovered = False

    # -- lifecycle ------------------------------------------------------------------

    def recover(self) -> None:
        """Load every collection from Redis, then start tailing. One attempt: while Redis cannot be reached this raises
        StorageUnavailable, and the start-up (service/app.py) retries it with backoff until its give-up time."""
        try:
            self._control_applied = self._last_id(self._control)
            for name, raw in self._redis.hgetall(self._registry).items():
                self._load(name.decode(), json.loads(raw))
        except redis.RedisError as exc:
            raise StorageUnavailable(f"redis unreachable at start: {exc}") from exc
        self.recovered = True
        self._tailer = threading.Thread(target=self._tail_forever, name="redis-tailer", daemon=True)
        self._tailer.start()

    def close(self) -> None:
        self._stop.set()
        if self._tailer is not None:
            self._tailer.join(BLOCK_MS / 1000 + 5)
        self._redis.close()
        self._tail_redis.close()

    def _last_id(self, key: str) -> str:
        last = self._redis.xrevrange(key, "+", "-", count=1)
        return last[0][0].decode() if last else "0-0"

    def _load(self, name: str, entry: dict[str, Any]) -> _Replica:
        """Build this replica's copy from the hash; the log is replayed from a mark taken first."""
        with self._lock:
            current = self._replicas.get(name)
            if current is not None and current.epoch == entry["epoch"]:
                return current
        config = CollectionConfig(**entry["config"])
        replica = _Replica(Collection(config, device=self.device), entry["epoch"], self._prefix)
        replica.applied = self._last_id(replica.log_key)
        cursor = 0
        loaded = 0
        while True:
            cursor, batch = self._redis.hscan(replica.points_key, cursor, count=LOAD_BATCH)
            if batch:
                ids = [k.decode() for k in batch]
                points = [unpack_point(v, config.dim) for v in batch.values()]
                vectors = np.stack([p[0] for p in points])
                replica.collection.upsert(ids, vectors, [p[1] for p in points])
                loaded += len(ids)
            if cursor == 0:
                break
        with self._lock:
            current = self._replicas.get(name)
            if current is None or current.epoch != entry["epoch"]:
                self._replicas[name] = replica
                self.failures.pop(name, None)
        if current is not None and current.epoch == entry["epoch"]:
            replica.collection.release_device()
            return current  # another thread loaded it meanwhile
        if current is not None:
            current.collection.release_device()  # an older epoch of the name: dropped and re-created elsewhere
        log.info("collection %s loaded from redis: %d points (log mark %s)", name, loaded, replica.applied)
        return replica

    # -- tailing --------------------------------------------------------------------

    def _tail_forever(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._tail_once()
                backoff = 0.1
            except redis.RedisError as exc:
                log.warning("redis tailer: %s; retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # never let the tailer die: a dead tailer means stale replicas
                log.exception("redis tailer failed on an entry; retrying")
                self._stop.wait(1.0)

    def _tail_once(self) -> None:
        with self._lock:
            streams = {self._control: self._control_applied}
            streams.update({r.log_key: r.applied for r in self._replicas.values()})
        answer = self._tail_redis.xread(streams, count=1000, block=BLOCK_MS)
        for key, entries in answer or []:
            key = key.decode()
            if key == self._control:
                self._apply_control(entries)
            else:
                self._apply_log(key, entries)

    def _apply_control(self, entries: list) -> None:
        for entry_id, fields in entries:
            op, name = fields[b"op"].decode(), fields[b"name"].decode()
            if op == "create":
                raw = self._redis.hget(self._registry, name)
                if raw is not None:
                    self._load(name, json.loads(raw))
            elif op == "drop":
                with self._lock:
                    replica = self._replicas.get(name)
                    if replica is not None and replica.epoch == fields[b"epoch"].decode():
                        del self._replicas[name]
                    else:
                        replica = None
                if replica is not None:
                    replica.collection.release_device()
            with self._applied:
                self._control_applied = entry_id.decode()
                self._applied.notify_all()

    def _apply_log(self, key: str, entries: list) -> None:
        with self._lock:
            replica = next((r for r in self._replicas.values() if r.log_key == key), None)
        if replica is None:
            return  # dropped meanwhile
        touched = list(dict.fromkeys(i for _, fields in entries for i in json.loads(fields[b"ids"])))
        blobs = self._redis.hmget(replica.points_key, touched) if touched else []
        gone = [i for i, blob in zip(touched, blobs, strict=True) if blob is None]
        present = [
            (i, unpack_point(blob, replica.collection.config.dim))
            for i, blob in zip(touched, blobs, strict=True)
            if blob is not None
        ]
        if gone:
            replica.collection.delete(gone)
        if present:
            replica.collection.upsert(
                [i for i, _ in present], np.stack([p[0] for _, p in present]), [p[1] for _, p in present]
            )
        with self._applied:
            replica.applied = entries[-1][0].decode()
            self._applied.notify_all()

    def _wait_applied(self, replica: _Replica, entry_id: str) -> None:
        """Read-your-writes: return once this replica's tailer has applied `entry_id`."""
        target = stream_id(entry_id)
        deadline = time.monotonic() + self._ack_wait
        with self._applied:
            while stream_id(replica.applied) < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("write %s is durable in redis but not yet searchable here", entry_id)
                    return
                self._applied.wait(left)

    # -- collections ----------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._replicas)

    def _replica(self, name: str) -> _Replica:
        with self._lock:
            replica = self._replicas.get(name)
        if replica is None:
            raise NotFound(f"collection {name!r} does not exist", code=ErrorCode.COLLECTION_NOT_FOUND)
        return replica

    def get(self, name: str) -> Collection:
        return self._replica(name).collection

    def create(self, config: CollectionConfig) -> tuple[Collection, bool]:
        check_collection_name(config.name)
        Collection(config)  # validates kind and parameters before anything is written
        entry = {"config": config.as_dict(), "epoch": uuid.uuid4().hex[:12]}
        try:
            created = self._redis.hsetnx(self._registry, config.name, json.dumps(entry))
            if created:
                self._redis.xadd(self._control, {"op": "create", "name": config.name, "epoch": entry["epoch"]},
                                 maxlen=10_000, approximate=True)
            else:
                entry = json.loads(self._redis.hget(self._registry, config.name) or b"null") or entry
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        if entry["config"] != config.as_dict():
            raise Conflict(
                f"collection {config.name!r} exists with another configuration",
                {"existing": entry["config"]}, code=ErrorCode.COLLECTION_EXISTS,
            )
        return self._load(config.name, entry).collection, bool(created)

    def drop(self, name: str) -> None:
        replica = self._replica(name)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._registry, name)
                pipe.delete(replica.points_key, replica.log_key)
                pipe.xadd(
                    self._control, {"op": "drop", "name": name, "epoch": replica.epoch}, maxlen=10_000, approximate=True
                )
                pipe.execute()
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        with self._lock:
            if self._replicas.get(name) is replica:
                del self._replicas[name]
        replica.collection.release_device()

    # -- points ---------------------------------------------------------------------

    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata]) -> int:
        replica = self._replica(name)
        prepared = replica.collection.prepare_vectors(vectors)
        last = {point_id: row for row, point_id in enumerate(ids)}  # a repeated id: the last one wins
        mapping = {point_id: pack_point(prepared[row], metadata[row]) for point_id, row in last.items()}
        entry_id = self._write(
            replica, "upsert", list(last), lambda pipe: pipe.hset(replica.points_key, mapping=mapping)
        )[1]
        self._wait_applied(replica, entry_id)
        return len(last)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        replica = self._replica(name)
        unique = list(dict.fromkeys(ids))
        deleted, entry_id = self._write(replica, "delete", unique, lambda pipe: pipe.hdel(replica.points_key, *unique))
        self._wait_applied(replica, entry_id)
        return int(deleted)

    def _write(self, replica: _Replica, op: str, ids: list[str], change) -> tuple[Any, str]:
        """Change the hash and log the ids in one transaction; returns (the change's reply, the entry id)."""
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                change(pipe)
                pipe.xadd(replica.log_key, {"op": op, "ids": json.dumps(ids)}, maxlen=self._maxlen, approximate=True)
                reply, entry_id = pipe.execute()
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        return reply, entry_id.decode()

    @staticmethod
    def _unavailable(exc: Exception) -> StorageUnavailable:
        # When the connection drops mid-transaction Redis may have applied it without our seeing the reply:
        # the outcome is unknown, never partial (one MULTI/EXEC), and a retry is safe (upserts and deletes are
        # idempotent).
        return StorageUnavailable(
            f"redis is unavailable ({type(exc).__name__}); the write was not acknowledged and may or may not have "
            "been applied as a whole; retrying it is safe"
        )
