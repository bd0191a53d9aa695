"""One collection: vectors + metadata over string ids, served by a rebuildable FAISS index.

Every point gets an internal int64 key when written; a key's vector never
changes (an update is a new key, the old one dies). The collection keeps
all vectors itself in a growable array indexed by key, so that:
  - the FAISS index (kinds.py) can be rebuilt at any time, in the background,
    from an immutable view of the keys alive when the rebuild started;
  - kinds that cannot remove in place (HNSW) hide dead keys with tombstones
    (an IDSelector in the search parameters) until the next rebuild;
  - filtered searches over a small subset, and re-ranking of quantised
    candidates, use exact scores.

Cosine collections store unit vectors and search by inner product; `l2`
scores are squared Euclidean distances (smaller is nearer).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import faiss
import numpy as np

from service.errors import ErrorCode, NotFound, UnprocessableInput
from service.index import kinds
from service.index.device_search import DeviceMirror, SearchDevice
from service.index.filters import compile_filter
from service.index.rwlock import ReadWriteLock

log = logging.getLogger(__name__)

Metric = Literal["cosine", "ip", "l2"]
Metadata = dict[str, Any]

ADD_CHUNK = 65_536
# Under ip and l2 a score is at most |q|·|x| or (|q| + |x|)²: with every stored and query vector's norm at most
# this, every score (and FAISS's |x|² + |q|² - 2 q·x) fits float32 (largest 3.4e38). Larger finite vectors used to
# overflow to inf: hits went missing (l2) and scores were null (ip). Cosine normalises in float64 and has no bound.
MAX_NORM = math.sqrt(float(np.finfo(np.float32).max) / 4)  # about 9.2e18
PARALLEL_MIN_QUERIES = 8
RERANK_GATHER_FLOATS = 1 << 24  # candidate vectors gathered at once for an exact re-score (64 MB)
MAX_THREADS = faiss.omp_get_max_threads()


@dataclass(frozen=True, kw_only=True)
class CollectionConfig:
    name: str
    dim: int
    metric: Metric = "cosine"
    index: kinds.IndexKind = "flat"
    space_id: str | None = None
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CollectionState:
    """What a snapshot holds: points by internal key, and the serialised FAISS index over those keys (or None)."""

    ids: list[str]
    keys: np.ndarray
    vectors: np.ndarray
    metadata: list[Metadata]
    index: np.ndarray | None
    index_kind: str
    tombstones: np.ndarray


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: Metadata


def exact_scores(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """(Q, N) scores in the collection's convention: inner product, or squared L2 distance."""
    dots = queries @ vectors.T
    if metric != "l2":
        return dots
    return (queries * queries).sum(1)[:, None] - 2 * dots + (vectors * vectors).sum(1)[None, :]


def prepare_vectors(vectors: np.ndarray, config: CollectionConfig) -> np.ndarray:
    """(N, dim) float32, finite, unit-norm for cosine; raises 422 otherwise (every backend validates the same way)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != config.dim:
        raise UnprocessableInput(
            f"vectors must have dimension {config.dim}; got shape {list(vectors.shape)}",
            {"expected_dim": config.dim},
            code=ErrorCode.DIMENSION_MISMATCH,
        )
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))  # the first offending row: detail.index points the caller at it
        raise UnprocessableInput(f"vector {row} contains NaN or Inf", {"index": row}, code=ErrorCode.INVALID_VECTOR)
    # float64: the norm of a finite float32 vector can overflow float32 (cosine [3e38] * 4 was stored as zeros).
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if config.metric == "cosine":
        zero = norms == 0
        if zero.any():
            row = int(np.argmax(zero))
            raise UnprocessableInput(f"vector {row} is a zero vector: it has no direction for cosine similarity",
                                     {"index": row}, code=ErrorCode.INVALID_VECTOR)
        return np.ascontiguousarray(vectors / norms[:, None], dtype=np.float32)
    large = norms > MAX_NORM
    if large.any():
        row = int(np.argmax(large))
        raise UnprocessableInput(
            f"vector {row} has norm {norms[row]:.3g}: {config.metric} scores of vectors above norm {MAX_NORM:.3g} "
            "overflow float32; scale the vectors down (the ranking does not change) or use the cosine metric",
            {"index": row, "norm": float(norms[row]), "max_norm": MAX_NORM}, code=ErrorCode.INVALID_VECTOR)
    return np.ascontiguousarray(vectors, dtype=np.float32)


class Collection:
    def __init__(self, config: CollectionConfig, *, background: bool = True, device: SearchDevice | None = None
                 ) -> None:
        """`device`: search the collection on it while it is flat (device_search.py); None: FAISS on the CPU."""
        if config.index not in kinds.KINDS:
            raise UnprocessableInput(
                f"unknown index kind {config.index!r}; known: {list(kinds.KINDS)}", code=ErrorCode.INVALID_INDEX
            )
        try:
            self.params = kinds.resolve_params(config.params)
            if config.index == "ivf_pq":
                kinds.pq_m_for(config.dim if not self.params["pca"] else int(self.params["pca"]), self.params)
            if self.params["pca"] is not None and not 1 <= int(self.params["pca"]) <= config.dim:
                raise ValueError(f"pca={self.params['pca']} must be between 1 and dim={config.dim}")
        except ValueError as exc:
            raise UnprocessableInput(str(exc), code=ErrorCode.INVALID_INDEX) from exc
        self.config = config
        self._background = background
        self._lock = ReadWriteLock()
        self._key_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._meta_of: dict[int, Metadata] = {}  # by key: alive points only
        self._vectors = np.zeros((1024, config.dim), np.float32)  # row = key
        self._alive = np.zeros(1024, bool)
        self._next_key = 0
        self._built_kind = kinds.kind_for_size(config.index, 0, self.params)
        self._built = kinds.build_index(self._built_kind, config.dim, config.metric, self.params)
        self._tombstones: set[int] = set()  # dead keys still inside the FAISS index
        self._selector: tuple[Any, Any] | None = None  # cached (selector, batch) for the tombstones
        self._rebuild_lock = threading.Lock()
        self._rebuild_thread: threading.Thread | None = None
        self.rebuilds = 0
        self._mirror = DeviceMirror(device, config.name, config.dim, config.metric) if device is not None else None

    # -- validation (pure; called before anything is logged or applied) ----------------

    def prepare_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """(N, dim) float32, finite, unit-norm for cosine; raises 422 otherwise."""
        return prepare_vectors(vectors, self.config)

    # -- state ------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self._key_of)

    @property
    def index_in_use(self) -> str:
        """The kind serving now: `auto` and untrained IVF kinds serve exactly (flat) while small."""
        return self._built_kind

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    @property
    def memory_bytes(self) -> int:
        return self.count * (4 * self.config.dim + 8) + self._built.memory_bytes

    def _grow(self, needed: int) -> None:
        if needed <= len(self._alive):
            return
        size = max(needed, 2 * len(self._alive))
        vectors = np.zeros((size, self.config.dim), np.float32)
        vectors[: self._next_key] = self._vectors[: self._next_key]
        alive = np.zeros(size, bool)
        alive[: self._next_key] = self._alive[: self._next_key]
        # A rebuild may still read the old array: its rows below _next_key never change.
        self._vectors, self._alive = vectors, alive

    def _kill(self, keys: list[int]) -> None:
        """Mark keys dead (write lock held): removed in place, or tombstoned."""
        if not keys:
            return
        for key in keys:
            self._alive[key] = False
            self._meta_of.pop(key, None)
            del self._id_of[key]
        if self._mirror is not None:
            self._mirror.forget(keys)
        if self._built.removes_in_place:
            self._built.index.remove_ids(np.asarray(keys, dtype=np.int64))
        else:
            self._tombstones.update(keys)
            self._selector = None

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata]) -> None:
        """`vectors` must come from prepare_vectors; a repeated id replaces its point."""
        # A repeated id inside one batch: the last occurrence wins.
        last = {point_id: row for row, point_id in enumerate(ids)}
        rows = np.fromiter(last.values(), dtype=np.int64, count=len(last))
        with self._lock.write():
            self._kill([self._key_of.pop(i) for i in last if i in self._key_of])
            start = self._next_key
            keys = np.arange(start, start + len(rows), dtype=np.int64)
            self._grow(start + len(rows))
            self._vectors[start : start + len(rows)] = vectors[rows]
            self._alive[start : start + len(rows)] = True
            self._next_key += len(rows)
            for key, (point_id, row) in zip(keys.tolist(), last.items(), strict=True):
                self._key_of[point_id] = key
                self._id_of[key] = point_id
                self._meta_of[key] = dict(metadata[row])
            # Always into the index serving now; a rebuild to another kind catches up with these keys.
            for lo in range(0, len(keys), ADD_CHUNK):
                chunk = keys[lo : lo + ADD_CHUNK]
                self._built.index.add_with_ids(self._vectors[chunk], chunk)
        self._maybe_rebuild()

    def delete(self, ids: Sequence[str]) -> int:
        with self._lock.write():
            keys = [self._key_of.pop(i) for i in dict.fromkeys(ids) if i in self._key_of]
            self._kill(keys)
        self._maybe_rebuild()
        return len(keys)

    def get(self, point_id: str) -> tuple[np.ndarray, Metadata]:
        with self._lock.read():
            key = self._key_of.get(point_id)
            if key is None:
                raise NotFound(
                    f"point {point_id!r} not found in collection {self.config.name!r}", code=ErrorCode.POINT_NOT_FOUND
                )
            return self._vectors[key].copy(), self._meta_of[key]

    # -- search -----------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[str | None] = (),
        filter: Mapping[str, Any] | None = None,  # the API's word, though a builtin's too
        params: Mapping[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """`queries` from prepare_vectors; `exclude[i]` drops that id from query i (search by stored id).

        `params` may set `ef` (HNSW), `nprobe` (IVF) and `rerank` for this search only.
        """
        predicate = compile_filter(filter)
        search_params = self._search_params(params or {})
        skips = [exclude[i] if i < len(exclude) else None for i in range(len(queries))]
        extra = 1 if any(skips) else 0
        with self._lock.read():
            n = self.count
            if n == 0:
                return [[] for _ in range(len(queries))]
            if predicate is None:
                keys, scores = self._index_search(queries, k + extra, search_params)
                return [self._hits(keys[q], scores[q], skips[q], k) for q in range(len(queries))]
            allowed = np.fromiter((key for key, meta in self._meta_of.items() if predicate(meta)), dtype=np.int64)
            if len(allowed) == 0:
                return [[] for _ in range(len(queries))]
            exact_max = self.params["filter_exact_max_points"]
            if len(allowed) <= exact_max or len(allowed) <= self.params["filter_exact_max_fraction"] * n:
                return self._exact_subset(queries, allowed, k, skips)
            # Over-fetch: enough candidates that k of them should pass the filter, with margin.
            fetch = min(n, math.ceil((k + extra) * n / len(allowed) * 2) + 10)
            keys, scores = self._index_search(queries, fetch, search_params)
            allowed_mask = np.zeros(self._next_key, bool)
            allowed_mask[allowed] = True
            results = []
            for q in range(len(queries)):
                ok = (keys[q] >= 0) & allowed_mask[np.maximum(keys[q], 0)]
                hits = self._hits(keys[q][ok], scores[q][ok], skips[q], k)
                if len(hits) < min(k, len(allowed) - (1 if skips[q] else 0)):
                    hits = self._exact_subset(queries[q : q + 1], allowed, k, [skips[q]])[0]  # too few passed
                results.append(hits)
            return results

    def _search_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The collection's parameters with this search's `ef`, `nprobe` and `rerank` in their place."""
        renamed = {"ef": "ef_search", "nprobe": "nprobe", "rerank": "rerank"}
        return {**self.params, **{renamed[k]: int(v) for k, v in given.items() if k in renamed and v is not None}}

    def _index_search(self, queries: np.ndarray, fetch: int, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(Q, fetch) keys (-1 = none) and scores, best first, exact scores when re-ranked (read lock held)."""
        built = self._built
        if self._mirror is not None and built.kind == "flat":
            found = self._mirror.candidates(queries, fetch, self._vectors, self._alive, self._next_key)
            if found is not None:  # fp16 candidates from the device, re-scored exactly here
                scores, keys = self._rerank(queries, found, fetch)
                return keys, scores
        factor = kinds.rerank_factor(built.kind, params) if not built.exact_scores or params["rerank"] else 1
        fetch_n = min(fetch * factor, max(self.count, 1))
        if built.on_gpu:  # GPU indexes take no IDSelector: over-fetch past the tombstones instead
            selector, fetch_n = None, min(fetch_n + len(self._tombstones), 2048, max(built.index.ntotal, 1))
        else:
            selector = self._tombstone_selector()
        # OpenMP across cores pays off for batches; for a query or two its fork/join (and spinning
        # threads on a busy machine) costs more than the search. The setting is per calling thread.
        faiss.omp_set_num_threads(1 if len(queries) < PARALLEL_MIN_QUERIES else MAX_THREADS)
        scores, keys = built.index.search(queries, fetch_n, params=built.search_parameters(params, fetch_n, selector))
        if factor > 1 or not built.exact_scores:
            scores, keys = self._rerank(queries, keys, fetch)
        return keys, scores

    def _rerank(self, queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for the candidates, best k kept."""
        safe = np.maximum(keys, 0)
        dots = np.empty(keys.shape, np.float32)
        squares = np.empty(keys.shape, np.float32)
        # The candidates' vectors are gathered a slice of queries at a time: an over-fetch of thousands of
        # candidates for a batch of queries would otherwise copy gigabytes.
        per = max(1, RERANK_GATHER_FLOATS // max(1, keys.shape[1] * self.config.dim))
        for lo in range(0, len(queries), per):
            candidates = np.take(self._vectors, safe[lo : lo + per], axis=0)  # (q, C, D)
            dots[lo : lo + per] = np.matmul(candidates, queries[lo : lo + per, :, None])[:, :, 0]
            if self.config.metric == "l2":
                squares[lo : lo + per] = (candidates * candidates).sum(2)
        if self.config.metric == "l2":
            exact = (queries * queries).sum(1)[:, None] - 2 * dots + squares
            exact[keys < 0] = np.inf
            order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        else:
            exact = dots
            exact[keys < 0] = -np.inf
            order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(keys, order, 1)

    def _exact_subset(
        self, queries: np.ndarray, allowed: np.ndarray, k: int, skips: Sequence[str | None]
    ) -> list[list[Hit]]:
        scores = exact_scores(queries, self._vectors[allowed], self.config.metric)
        take = min(k + 1, len(allowed))
        signed = scores if self.config.metric == "l2" else -scores
        part = np.argpartition(signed, take - 1, axis=1)[:, :take] if take < len(allowed) else np.tile(
            np.arange(len(allowed)), (len(queries), 1))
        results = []
        for q in range(len(queries)):
            order = part[q][np.argsort(signed[q][part[q]], kind="stable")]
            results.append(self._hits(allowed[order], scores[q][order], skips[q], k))
        return results

    def _hits(self, keys: np.ndarray, scores: np.ndarray, skip: str | None, k: int) -> list[Hit]:
        hits = []
        for score, key in zip(scores.tolist(), keys.tolist(), strict=True):
            if key < 0 or not self._alive[key]:
                continue
            point_id = self._id_of[key]
            if point_id == skip:
                continue
            hits.append(Hit(point_id, float(score), self._meta_of[key]))
            if len(hits) == k:
                break
        return hits

    def _tombstone_selector(self):
        if not self._tombstones:
            return None
        if self._selector is None:
            dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
            batch = faiss.IDSelectorBatch(dead)
            self._selector = (faiss.IDSelectorNot(batch), batch)  # keep `batch` alive with the NOT
        return self._selector[0]

    # -- rebuilds ---------------------------------------------------------------------

    def needs_rebuild(self) -> bool:
        target = kinds.kind_for_size(self.config.index, self.count, self.params)
        if target != self._built_kind:
            return True
        indexed = max(self._built.index.ntotal, 1)
        return len(self._tombstones) / indexed > self.params["rebuild_dead_ratio"]

    def _maybe_rebuild(self) -> None:
        if not self.needs_rebuild():
            return
        if not self._background:
            self.rebuild()
            return
        with self._rebuild_lock:
            if self._rebuild_thread is not None and self._rebuild_thread.is_alive():
                return
            self._rebuild_thread = threading.Thread(
                target=self._rebuild_quietly, name=f"rebuild-{self.config.name}", daemon=True
            )
            self._rebuild_thread.start()

    def _rebuild_quietly(self) -> None:
        try:
            while self.needs_rebuild():
                self.rebuild()
        except Exception:  # a failed rebuild leaves the old index serving
            log.exception("rebuild of collection %s failed", self.config.name)

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        thread = self._rebuild_thread
        if thread is not None:
            thread.join(timeout)

    def rebuild(self) -> None:
        """Build a fresh index of the kind the size calls for, off the lock, then swap it in atomically."""
        with self._lock.read():
            snap_next = self._next_key
            snap_keys = np.flatnonzero(self._alive[:snap_next]).astype(np.int64)
            vectors = self._vectors  # rows below snap_next never change, even if the array is replaced
            target = kinds.kind_for_size(self.config.index, len(snap_keys), self.params)
        sample = None
        if kinds.needs_training(target, self.params):
            rng = np.random.default_rng(0)
            take = min(len(snap_keys), max(256 * kinds.nlist_for(len(snap_keys), self.params), 50_000), 200_000)
            sample = vectors[np.sort(rng.choice(snap_keys, take, replace=False))]
        built = kinds.to_gpu(kinds.build_index(target, self.config.dim, self.config.metric, self.params, sample))
        for lo in range(0, len(snap_keys), ADD_CHUNK):
            chunk = snap_keys[lo : lo + ADD_CHUNK]
            built.index.add_with_ids(vectors[chunk], chunk)
        with self._lock.write():
            # Catch up with the writes made while building.
            new_keys = np.flatnonzero(self._alive[snap_next : self._next_key]).astype(np.int64) + snap_next
            if len(new_keys):
                built.index.add_with_ids(self._vectors[new_keys], new_keys)
            died = snap_keys[~self._alive[snap_keys]]
            tombstones: set[int] = set()
            if len(died):
                if built.removes_in_place:
                    built.index.remove_ids(died)
                else:
                    tombstones = set(died.tolist())
            self._built, self._built_kind = built, target
            self._tombstones, self._selector = tombstones, None
            self.rebuilds += 1
            if self._mirror is not None and built.kind != "flat":
                self._mirror.release()  # searched by the new index from now on
        log.info("collection %s: %s index rebuilt over %d points", self.config.name, target, built.index.ntotal)

    def release_device(self) -> None:
        """Give back the device memory of this collection (dropped, or the store is closing)."""
        if self._mirror is not None:
            with self._lock.write():
                self._mirror.release()

    # -- export -----------------------------------------------------------------------

    def export_state(self) -> CollectionState:
        """Every point with its internal key, and the FAISS index serving now, captured together for a snapshot."""
        with self._lock.read():
            keys = np.flatnonzero(self._alive[: self._next_key]).astype(np.int64)
            index = None
            # Keys are kept on load, so a sparse key space (many updates) would cost memory there: rebuild instead.
            if self._next_key <= 2 * len(keys) + ADD_CHUNK:
                index = kinds.serialize(self._built)
            return CollectionState(
                ids=[self._id_of[int(k)] for k in keys],
                keys=keys,
                vectors=self._vectors[keys].copy(),
                metadata=[self._meta_of[int(k)] for k in keys],
                index=index,
                index_kind=self._built_kind,
                tombstones=np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones)),
            )

    def restore(self, state: CollectionState) -> None:
        """Load a snapshot into this empty collection, reusing its FAISS index (no rebuild) when it has one.

        Raises ValueError when the stored index does not fit the points; the caller then upserts instead.
        """
        keys = np.asarray(state.keys, dtype=np.int64)
        tombstones = np.asarray(state.tombstones, dtype=np.int64)
        if state.index is None:
            raise ValueError("snapshot has no index")
        try:
            built = kinds.deserialize(state.index_kind, self.params, state.index)
        except RuntimeError as exc:  # written by another faiss version, truncated, ...
            raise ValueError(f"stored index not readable: {exc}") from exc
        if built.index.ntotal != len(keys) + len(tombstones):
            raise ValueError(
                f"stored index holds {built.index.ntotal} vectors, snapshot {len(keys)} + {len(tombstones)} dead"
            )
        if len(set(state.ids)) != len(keys):
            raise ValueError("snapshot ids are not unique")
        with self._lock.write():
            if self._next_key:
                raise RuntimeError("restore needs an empty collection")
            top = int(max(keys.max(initial=-1), tombstones.max(initial=-1))) + 1
            self._grow(top)
            self._vectors[keys] = state.vectors
            self._alive[keys] = True
            self._next_key = top
            for key, point_id, meta in zip(keys.tolist(), state.ids, state.metadata, strict=True):
                self._key_of[point_id] = key
                self._id_of[key] = point_id
                self._meta_of[key] = dict(meta)
            self._built, self._built_kind = built, state.index_kind
            # A GPU copy cannot hide ids with a selector either: the dead keys stay tombstones there too.
            self._tombstones, self._selector = set(tombstones.tolist()), None
        self._maybe_rebuild()
