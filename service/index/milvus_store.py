"""CollectionStore, milvus backend: a Milvus engine holds, indexes and searches the points; this process holds none.

One service collection is one Milvus collection, named `{prefix}_{escaped name}`:

    id        VARCHAR primary key (the point id)
    vector    FLOAT_VECTOR(dim), under the index the collection asked for
    metadata  JSON, returned as stored
    match     JSON, typed match keys that filters compare (see milvus_filters.py)

The service's own configuration (dim, metric, index, space id, model,
params) and an epoch (new on every create) live in the Milvus collection's
properties, so every replica pointed at the same Milvus sees the same
collections; each replica re-reads the list every `milvus_refresh_s`.

Consistency: every read (search, get, count) asks for Milvus's *Strong*
level: it sees every write acknowledged before it started, whichever
replica took the write. Session consistency would only cover the client
that wrote (one replica), Bounded not even that. The cost is on a server:
a Strong read waits until the node serving it has consumed the write log
up to the read's own timestamp (the next time tick), where Bounded answers
at once from what it has.

Calls into milvus-lite take turns (engine_turns.py): reads together, writes one at a time, creates, drops
and loads alone. Its engine locks neither its write path (concurrent upserts interleaved their records inside
its write-ahead log: after a kill -9 its recovery stopped at the first torn record and lost every acknowledged
write after it) nor its cache of open collections (a read racing a create cached a copy without the index).
A Milvus server orders all this itself; nothing waits for a turn there.

Durability: a write is acknowledged when Milvus acknowledged it. A Milvus
server has then put it in its write-ahead log (the message queue / WAL
service); the embedded milvus-lite has written it to its WAL file and
flushed it to the OS (a killed process loses nothing; a power cut can lose
the writes since the last fsync, which milvus-lite does when it seals a WAL).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, TypeVar

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from service.errors import Conflict, ErrorCode, NotFound, ServiceError, StorageUnavailable, UnprocessableInput
from service.index import kinds
from service.index.collection import CollectionConfig, Hit, Metadata, exact_scores, prepare_vectors
from service.index.engine_turns import Turns
from service.index.milvus_filters import MATCH_FIELD, ids_expression, match_keys, to_expression
from service.index.store import check_collection_name

log = logging.getLogger(__name__)

T = TypeVar("T")
Turn = Literal["read", "write", "alone"]

CONFIG_PROPERTY = "jepa.config"
CONSISTENCY = "Strong"
ID_MAX_BYTES = 1024  # point ids are at most 256 characters: 1024 bytes of UTF-8
MAX_DIM = 32768  # Milvus's limit on a float vector's dimension
QUERY_PAGE = 4096
QUERY_LIMIT = 16384  # Milvus's largest query limit: more matches are read page by page
WRITE_BATCH_BYTES = 16 * 1024 * 1024  # well under gRPC's 64 MB message limit
DEFAULT_NLIST = 128  # Milvus fixes nlist when the index is declared, before any point exists (its own default)
INDEX_TYPES = {"flat": "FLAT", "hnsw": "HNSW", "ivf_flat": "IVF_FLAT", "ivf_pq": "IVF_PQ", "auto": "AUTOINDEX"}
METRICS = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
# Error codes of MilvusException: the collection is gone / released; pymilvus could not reach the server.
COLLECTION_NOT_FOUND = 100
COLLECTION_NOT_LOADED = 101
CONNECT_FAILED = 2
# pymilvus wraps gRPC failures (UNAVAILABLE, DEADLINE_EXCEEDED, a closed channel) with these words in the message.
UNAVAILABLE_WORDS = re.compile(r"unavailable|fail connecting|deadline|timed? ?out|closed channel|not ready", re.I)


def milvus_name(prefix: str, name: str) -> str:
    """Milvus allows letters, digits and '_' only: '_' -> '_u', '-' -> '_h', '.' -> '_p' (one-to-one)."""
    escaped = name.replace("_", "_u").replace("-", "_h").replace(".", "_p")
    return f"{prefix}_{escaped}"


def check_milvus_config(config: CollectionConfig, *, lite: bool) -> dict[str, Any]:
    """The resolved params of a config Milvus can serve; 422 otherwise (before anything is created)."""
    if config.index not in INDEX_TYPES:
        raise UnprocessableInput(
            f"unknown index kind {config.index!r}; known: {list(INDEX_TYPES)}", code=ErrorCode.INVALID_INDEX
        )
    try:
        params = kinds.resolve_params(config.params)
        if config.index == "ivf_pq":
            kinds.pq_m_for(config.dim, params)
    except ValueError as exc:
        raise UnprocessableInput(str(exc), code=ErrorCode.INVALID_INDEX) from exc
    if params["pca"] is not None:
        raise UnprocessableInput("pca is a projection of the FAISS backends; the milvus backend does not offer it",
                                 code=ErrorCode.INVALID_INDEX)
    if config.index == "ivf_pq" and lite:
        raise UnprocessableInput("milvus-lite does not build IVF_PQ indexes (it would scan every vector); use hnsw "
                                 "or ivf_flat, or a Milvus server", code=ErrorCode.INVALID_INDEX)
    if config.dim > MAX_DIM:
        raise UnprocessableInput(f"Milvus vectors have at most {MAX_DIM} dimensions", code=ErrorCode.INVALID_INDEX)
    return params


def index_params(config: CollectionConfig, params: dict[str, Any]) -> dict[str, Any]:
    """Build parameters of the Milvus index for this kind."""
    nlist = int(params["nlist"] or DEFAULT_NLIST)
    return {
        "hnsw": {"M": int(params["M"]), "efConstruction": int(params["ef_construction"])},
        "ivf_flat": {"nlist": nlist},
        "ivf_pq": {"nlist": nlist, "m": kinds.pq_m_for(config.dim, params), "nbits": int(params["pq_bits"])},
    }.get(config.index, {})


def unavailable(exc: MilvusException) -> bool:
    """Milvus could not be reached or did not answer in time: retry later (503), not a failure of the request."""
    return exc.code == CONNECT_FAILED or bool(UNAVAILABLE_WORDS.search(str(exc.message)))


class MilvusCollection:
    """One collection as the API sees it (config, count, get, search); Milvus holds the points."""

    def __init__(self, store: MilvusCollectionStore, config: CollectionConfig, epoch: str) -> None:
        self.config = config
        self.epoch = epoch
        self.params = kinds.resolve_params(config.params)
        self.milvus_name = milvus_name(store.prefix, config.name)
        self.known_since = time.monotonic()  # a refresh that started earlier must not forget it
        self._store = store

    # -- what /collections/{name} reports -----------------------------------------------

    @property
    def count(self) -> int:
        return self._count("")

    @property
    def memory_bytes(self) -> int:
        # The engine's memory, not this process's (which holds no vectors): raw vectors and ids, an estimate.
        return self.count * (4 * self.config.dim + 8)

    @property
    def index_in_use(self) -> str:
        return self.config.index

    tombstones = 0  # Milvus removes deleted points itself (compaction)

    # -- points -------------------------------------------------------------------------

    def prepare_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return prepare_vectors(vectors, self.config)

    def get(self, point_id: str) -> tuple[np.ndarray, Metadata]:
        rows = self._store.call(self.config.name, lambda c: c.query(
            self.milvus_name, filter=ids_expression([point_id]), output_fields=["vector", "metadata"],
            consistency_level=CONSISTENCY,
            timeout=self._store.timeout))
        if not rows:
            raise NotFound(
                f"point {point_id!r} not found in collection {self.config.name!r}", code=ErrorCode.POINT_NOT_FOUND
            )
        return np.asarray(rows[0]["vector"], np.float32), rows[0]["metadata"]

    # -- search -------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[str | None] = (),
        filter: Mapping[str, Any] | None = None,  # the API's word, though a builtin's too
        params: Mapping[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """Same contract as Collection.search: exact with flat, exact under a filter at every selectivity."""
        expression = to_expression(filter)
        skips = [exclude[i] if i < len(exclude) else None for i in range(len(queries))]
        fetch = k + (1 if any(skips) else 0)
        if expression is not None and self.config.index != "flat":
            # An ANN index searched under a selective filter can miss matches (an HNSW walk stalls among
            # points that fail it): like the FAISS backends, score a small matching subset exactly.
            matching = self._count(expression)
            if matching == 0:
                return [[] for _ in queries]
            exact_max = self.params["filter_exact_max_points"]
            if matching <= exact_max or matching <= self.params["filter_exact_max_fraction"] * self.count:
                return self._exact_subset(queries, expression, matching, k, skips)
        results = self._ann(queries, fetch, expression, dict(params or {}))
        hits = [self._trim(found, skips[q], k) for q, found in enumerate(results)]
        if expression is not None and self.config.index != "flat":
            # Fewer hits than matching points: the walk missed some (rare past 5 %): score those queries exactly.
            short = [q for q, h in enumerate(hits) if len(h) < min(k, matching - (1 if skips[q] else 0))]
            if short:
                exact = self._exact_subset(queries[short], expression, matching, k, [skips[q] for q in short])
                for q, found in zip(short, exact, strict=True):
                    hits[q] = found
        return hits

    def _search_params(self, params: dict[str, Any], limit: int) -> dict[str, Any]:
        knobs: dict[str, Any] = {}
        if self.config.index == "hnsw":
            knobs["ef"] = max(int(params.get("ef") or self.params["ef_search"]), limit)  # Milvus needs ef >= limit
        elif self.config.index in ("ivf_flat", "ivf_pq"):
            knobs["nprobe"] = int(params.get("nprobe") or self.params["nprobe"])
        return {"metric_type": METRICS[self.config.metric], "params": knobs}

    def _ann(self, queries: np.ndarray, fetch: int, expression: str | None, params: dict[str, Any]) -> list[list[Hit]]:
        factor = kinds.rerank_factor(
            self.config.index, dict(self.params, rerank=params.get("rerank", self.params["rerank"]))
        )
        limit = fetch * factor if self.config.index != "flat" else fetch
        output = ["metadata", "vector"] if factor > 1 and self.config.index != "flat" else ["metadata"]
        found = self._store.call(
            self.config.name,
            lambda c: c.search(
                self.milvus_name,
                data=queries.tolist(),
                limit=limit,
                filter=expression or "",
                output_fields=output,
                search_params=self._search_params(params, limit),
                consistency_level=CONSISTENCY,
                timeout=self._store.timeout,
            ),
        )
        results = []
        for q, rows in enumerate(found):
            if "vector" in output and rows:  # re-score the candidates exactly (quantised scores are approximate)
                vectors = np.asarray([row["entity"]["vector"] for row in rows], np.float32)
                scores = exact_scores(queries[q : q + 1], vectors, self.config.metric)[0]
                order = np.argsort(scores if self.config.metric == "l2" else -scores, kind="stable")[:fetch]
                results.append([Hit(rows[i]["id"], float(scores[i]), rows[i]["entity"]["metadata"]) for i in order])
            else:
                results.append(
                    [Hit(row["id"], float(row["distance"]), row["entity"]["metadata"]) for row in rows[:fetch]]
                )
        return results

    @staticmethod
    def _trim(hits: list[Hit], skip: str | None, k: int) -> list[Hit]:
        return [h for h in hits if h.id != skip][:k]

    def _count(self, expression: str) -> int:
        rows = self._store.call(self.config.name, lambda c: c.query(
            self.milvus_name, filter=expression, output_fields=["count(*)"], consistency_level=CONSISTENCY,
            timeout=self._store.timeout))
        return int(rows[0]["count(*)"])

    def _exact_subset(self, queries: np.ndarray, expression: str, matching: int, k: int,
                      skips: Sequence[str | None]) -> list[list[Hit]]:
        """Every point matching the filter (`matching` of them, counted just before), scored exactly here."""
        ids: list[str] = []
        vectors: list[list[float]] = []
        metadata: list[Metadata] = []

        def keep(rows: list[dict]) -> None:
            for row in rows:
                ids.append(row["id"])
                vectors.append(row["vector"])
                metadata.append(row["metadata"])

        def page(client: MilvusClient) -> None:
            fields = ["id", "vector", "metadata"]
            if matching <= QUERY_LIMIT:  # one call
                keep(client.query(self.milvus_name, filter=expression, output_fields=fields, limit=QUERY_LIMIT,
                                  consistency_level=CONSISTENCY, timeout=self._store.timeout))
                return
            iterator = client.query_iterator(self.milvus_name, batch_size=QUERY_PAGE, filter=expression,
                                             output_fields=fields, consistency_level=CONSISTENCY,
                                             timeout=self._store.timeout)
            try:
                while rows := iterator.next():
                    keep(rows)
            finally:
                iterator.close()

        self._store.call(self.config.name, page)
        if not ids:
            return [[] for _ in queries]
        scores = exact_scores(queries, np.asarray(vectors, np.float32), self.config.metric)
        signed = scores if self.config.metric == "l2" else -scores
        results = []
        for q in range(len(queries)):
            order = np.argsort(signed[q], kind="stable")[: k + 1]
            hits = [Hit(ids[i], float(scores[q, i]), metadata[i]) for i in order]
            results.append(self._trim(hits, skips[q], k))
        return results


class MilvusCollectionStore:
    """The CollectionBackend on Milvus: every replica pointed at one Milvus shares its collections."""

    def __init__(self, uri: str, *, token: str = "", db_name: str = "", prefix: str = "jepa", timeout_s: float = 10.0,
                 refresh_s: float = 1.0, connect_wait_s: float = 30.0) -> None:
        self.uri = uri
        self.prefix = prefix
        self._token = token
        self._db_name = db_name
        self.timeout = timeout_s
        self._refresh_s = refresh_s
        self._connect_wait = connect_wait_s
        self._client: MilvusClient | None = None
        self.lite = False
        self._collections: dict[str, MilvusCollection] = {}
        self._lock = threading.Lock()
        self._turns = Turns(False, timeout_s)  # milvus-lite's, once recover() knows the engine
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self.failures: dict[str, str] = {}
        self.recovered = False

    # -- lifecycle ------------------------------------------------------------------

    def recover(self) -> None:
        """Connect (retrying for connect_wait_s while Milvus is unreachable), read every collection, start
        refreshing."""
        deadline = time.monotonic() + self._connect_wait
        while True:
            try:
                self._client = MilvusClient(
                    uri=self.uri, token=self._token, db_name=self._db_name, timeout=self.timeout
                )
                self.lite = "lite" in str(self._client.get_server_version()).lower()
                self._turns = Turns(self.lite, self.timeout)
                self.refresh()
                break
            except MilvusException as exc:
                if time.monotonic() > deadline:
                    raise StorageUnavailable(f"milvus unreachable at start: {exc}") from exc
                log.warning("milvus not reachable at %s while recovering collections (%s); retrying", self.uri, exc)
                time.sleep(1.0)
        log.info("milvus at %s (%s): %d collection(s)", self.uri, "milvus-lite" if self.lite else "server",
                 len(self._collections))
        self.recovered = True
        self._refresher = threading.Thread(target=self._refresh_forever, name="milvus-refresh", daemon=True)
        self._refresher.start()

    def close(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(self._refresh_s + self.timeout)
        if self._client is not None:
            self._client.close()
        if "://" not in self.uri:  # the embedded engine: stop its in-process server and release its file lock
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    def _refresh_forever(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                self.refresh()
            except Exception as exc:  # never let the refresher die: the list would go stale
                log.warning("milvus refresh of the collection list failed: %s", exc)

    def refresh(self) -> None:
        """Re-read which collections exist and their configs (creates and drops made through other replicas)."""
        client = self._require_client()
        started = time.monotonic()
        found: dict[str, MilvusCollection] = {}
        with self._turns.read():
            names = client.list_collections(timeout=self.timeout)
        for name in names:
            if name.startswith(f"{self.prefix}_") and (current := self._refresh_one(client, name)) is not None:
                found[current.config.name] = current
        with self._lock:
            # Created through this replica while the list was being read: keep it.
            found.update({n: c for n, c in self._collections.items() if n not in found and c.known_since > started})
            self._collections = found

    def _refresh_one(self, client: MilvusClient, name: str) -> MilvusCollection | None:
        """The collection behind a Milvus collection name (loaded), or None when it is not one of ours (or gone)."""
        try:
            with self._turns.read():
                entry = self._read_entry(client, name)
        except MilvusException as exc:
            if exc.code == COLLECTION_NOT_FOUND:
                return None  # dropped between list and describe
            raise
        if entry is None:
            return None
        config, epoch = entry
        with self._lock:
            current = self._collections.get(config.name)
        if current is not None and current.epoch == epoch:
            return current
        with self._turns.read():
            loaded = "Loaded" in str(client.get_load_state(name, timeout=self.timeout).get("state"))
        if not loaded:
            with self._turns.alone():
                client.load_collection(name, timeout=self.timeout)  # milvus-lite releases all on restart
        return MilvusCollection(self, config, epoch)

    def _read_entry(self, client: MilvusClient, milvus_collection: str) -> tuple[CollectionConfig, str] | None:
        described = client.describe_collection(milvus_collection, timeout=self.timeout)
        raw = (described.get("properties") or {}).get(CONFIG_PROPERTY)
        if raw is None:
            return None
        entry = json.loads(raw)
        config = CollectionConfig(**entry["config"])
        if milvus_name(self.prefix, config.name) != milvus_collection:
            return None
        return config, entry["epoch"]

    def _require_client(self) -> MilvusClient:
        if self._client is None:
            raise StorageUnavailable("milvus is not connected yet")
        return self._client

    def call(self, name: str, fn: Callable[[MilvusClient], T], turn: Turn = "read") -> T:
        """One Milvus call, in its `turn` (engine_turns.py; milvus-lite only): unreachable -> 503 (retry later),
        collection gone -> 404, anything else -> 500."""
        try:
            try:
                with self._turn(turn):
                    return fn(self._require_client())
            except MilvusException as exc:
                if exc.code != COLLECTION_NOT_LOADED:
                    raise
                # Released (milvus-lite after a restart, or an operator's release): load it and try once more.
                with self._turns.alone():
                    self._require_client().load_collection(milvus_name(self.prefix, name), timeout=self.timeout)
                with self._turn(turn):
                    return fn(self._require_client())
        except MilvusException as exc:
            if exc.code == COLLECTION_NOT_FOUND:
                with self._lock:
                    self._collections.pop(name, None)
                raise NotFound(f"collection {name!r} does not exist", code=ErrorCode.COLLECTION_NOT_FOUND) from exc
            if unavailable(exc):
                raise StorageUnavailable(f"milvus is unavailable ({exc.message}); retry later") from exc
            log.error("milvus call on %s failed: %s", name, exc)
            raise ServiceError(f"milvus failed on collection {name!r}") from exc
        except grpc.RpcError as exc:  # pymilvus lets some gRPC failures through as they are (a deadline, a reset)
            status = exc.code().name if isinstance(exc, grpc.Call) else type(exc).__name__
            raise StorageUnavailable(f"milvus did not answer ({status}); retry later") from exc

    def _turn(self, turn: Turn) -> AbstractContextManager[None]:
        return {"read": self._turns.read, "write": self._turns.write, "alone": self._turns.alone}[turn]()

    # -- collections ----------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def get(self, name: str) -> MilvusCollection:
        with self._lock:
            collection = self._collections.get(name)
        if collection is None:
            raise NotFound(f"collection {name!r} does not exist", code=ErrorCode.COLLECTION_NOT_FOUND)
        return collection

    def _lookup(self, name: str) -> MilvusCollection:
        """Like get, but asks Milvus when this replica has not seen the collection yet (made elsewhere)."""
        try:
            return self.get(name)
        except NotFound:
            target = milvus_name(self.prefix, name)
            entry = self.call(name, lambda c: self._read_entry(c, target) if c.has_collection(target) else None)
            if entry is None:
                raise
            collection = MilvusCollection(self, entry[0], entry[1])
            with self._lock:
                self._collections[name] = collection
            return collection

    def create(self, config: CollectionConfig) -> tuple[MilvusCollection, bool]:
        check_collection_name(config.name)
        params = check_milvus_config(config, lite=self.lite)
        target = milvus_name(self.prefix, config.name)
        try:
            existing = self._lookup(config.name)
        except NotFound:
            existing = None
        created = False
        if existing is None:
            epoch = uuid.uuid4().hex[:12]
            self.call(config.name, lambda c: self._create_in_milvus(c, target, config, params, epoch), turn="alone")
            existing = self._lookup(config.name)  # a replica racing us may have won: its config is the one kept
            created = existing.epoch == epoch
        if existing.config.as_dict() != config.as_dict():
            raise Conflict(f"collection {config.name!r} exists with another configuration",
                           {"existing": existing.config.as_dict()}, code=ErrorCode.COLLECTION_EXISTS)
        return existing, created

    def _create_in_milvus(self, client: MilvusClient, target: str, config: CollectionConfig, params: dict[str, Any],
                          epoch: str) -> None:
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=config.dim)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field(MATCH_FIELD, DataType.JSON)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type=INDEX_TYPES[config.index], metric_type=METRICS[config.metric],
                        params=index_params(config, params))
        properties = {CONFIG_PROPERTY: json.dumps({"config": config.as_dict(), "epoch": epoch})}
        try:
            client.create_collection(target, schema=schema, index_params=index, consistency_level=CONSISTENCY,
                                     properties=properties, timeout=self.timeout)
        except MilvusException as exc:
            if "exist" not in str(exc).lower():
                raise  # "already exists": another replica created it first; create() compares configs

    def drop(self, name: str) -> None:
        collection = self._lookup(name)
        self.call(name, lambda c: c.drop_collection(collection.milvus_name, timeout=self.timeout), turn="alone")
        with self._lock:
            if self._collections.get(name) is collection:
                del self._collections[name]

    # -- points ---------------------------------------------------------------------

    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata]) -> int:
        collection = self._lookup(name)
        prepared = collection.prepare_vectors(vectors)
        last = {point_id: row for row, point_id in enumerate(ids)}  # a repeated id: the last one wins
        rows = [{"id": point_id, "vector": prepared[row].tolist(), "metadata": dict(metadata[row]),
                 MATCH_FIELD: match_keys(metadata[row])} for point_id, row in last.items()]
        per_batch = max(1, WRITE_BATCH_BYTES // (4 * collection.config.dim + 4096))
        for lo in range(0, len(rows), per_batch):
            batch = rows[lo : lo + per_batch]
            self._write(name, lambda c, b=batch: c.upsert(collection.milvus_name, b, timeout=self.timeout))
        return len(rows)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        collection = self._lookup(name)
        unique = list(dict.fromkeys(ids))
        # Milvus counts the ids it was sent, not the points it removed: ask which exist first.
        if not unique:
            return 0
        # By an expression of escaped literals, never pymilvus's `ids=` (it pastes ids in unescaped).
        selected = ids_expression(unique)
        present = self.call(name, lambda c: c.query(collection.milvus_name, filter=selected, output_fields=["id"],
                                                    consistency_level=CONSISTENCY, timeout=self.timeout))
        self._write(name, lambda c: c.delete(collection.milvus_name, filter=selected, timeout=self.timeout))
        return len(present)

    def flush(self, name: str) -> None:
        """Seal what the engine buffers, so that it indexes those rows (it does so by itself as data grows, and
        builds the index in the background; benchmarks and tests call this to search an indexed collection)."""
        collection = self._lookup(name)
        self.call(name, lambda c: c.flush(collection.milvus_name, timeout=self.timeout), turn="write")

    def _write(self, name: str, fn: Callable[[MilvusClient], Any]) -> None:
        try:
            self.call(name, fn, turn="write")
        except StorageUnavailable as exc:
            # The connection may have dropped after Milvus applied the write: its outcome is unknown; a retry is
            # safe (upserts by id and deletes are idempotent).
            raise StorageUnavailable(f"{exc.message}; the write was not acknowledged and may or may not have been "
                                     "applied; retrying it is safe") from exc

