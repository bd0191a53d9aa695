"""One collection: an exact FAISS index over string ids, with metadata per point.

Cosine collections store unit vectors and search by inner product; `l2`
scores are squared Euclidean distances (smaller is nearer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import faiss
import numpy as np

from service.errors import NotFound, UnprocessableInput
from service.index.rwlock import ReadWriteLock

Metric = Literal["cosine", "ip", "l2"]
Metadata = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class CollectionConfig:
    name: str
    dim: int
    metric: Metric = "cosine"
    index: str = "flat"
    space_id: str | None = None
    model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: Metadata


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Collection:
    def __init__(self, config: CollectionConfig) -> None:
        self.config = config
        inner = faiss.IndexFlatL2(config.dim) if config.metric == "l2" else faiss.IndexFlatIP(config.dim)
        self._index = faiss.IndexIDMap2(inner)
        self._lock = ReadWriteLock()
        self._key_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._metadata: dict[str, Metadata] = {}
        self._next_key = 0

    # -- validation (pure; called before anything is logged or applied) ----------------

    def prepare_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """(N, dim) float32, finite, unit-norm for cosine; raises 422 otherwise."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.config.dim:
            raise UnprocessableInput(
                f"vectors must have dimension {self.config.dim}; got shape {list(vectors.shape)}",
                {"expected_dim": self.config.dim},
                code="dimension_mismatch",
            )
        if not np.isfinite(vectors).all():
            raise UnprocessableInput("vectors contain NaN or Inf", code="invalid_vector")
        if self.config.metric == "cosine":
            if (np.linalg.norm(vectors, axis=1) == 0).any():
                raise UnprocessableInput("a zero vector has no direction for cosine similarity", code="invalid_vector")
            vectors = normalize_rows(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    # -- state ------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self._key_of)

    @property
    def memory_bytes(self) -> int:
        return self.count * (4 * self.config.dim + 8)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Metadata]) -> None:
        """`vectors` must come from prepare_vectors; a repeated id replaces its point."""
        with self._lock.write():
            replaced = [self._key_of[i] for i in ids if i in self._key_of]
            if replaced:
                self._index.remove_ids(np.asarray(replaced, dtype=np.int64))
            keys = np.arange(self._next_key, self._next_key + len(ids), dtype=np.int64)
            self._next_key += len(ids)
            for point_id in ids:
                old = self._key_of.pop(point_id, None)
                if old is not None:
                    del self._id_of[old]
            # A repeated id inside one batch: the last occurrence wins.
            last = {point_id: row for row, point_id in enumerate(ids)}
            rows = np.fromiter(last.values(), dtype=np.int64)
            self._index.add_with_ids(vectors[rows], keys[rows])
            for point_id, row in last.items():
                self._key_of[point_id] = int(keys[row])
                self._id_of[int(keys[row])] = point_id
                self._metadata[point_id] = dict(metadata[row])

    def delete(self, ids: Sequence[str]) -> int:
        with self._lock.write():
            keys = [self._key_of.pop(i) for i in dict.fromkeys(ids) if i in self._key_of]
            for key in keys:
                self._metadata.pop(self._id_of.pop(key), None)
            if keys:
                self._index.remove_ids(np.asarray(keys, dtype=np.int64))
            return len(keys)

    def get(self, point_id: str) -> tuple[np.ndarray, Metadata]:
        with self._lock.read():
            key = self._key_of.get(point_id)
            if key is None:
                raise NotFound(f"point {point_id!r} not found in collection {self.config.name!r}", code="point_not_found")
            return self._index.reconstruct(key), self._metadata[point_id]

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[str | None] = ()) -> list[list[Hit]]:
        """`queries` from prepare_vectors; `exclude[i]` drops that id from query i (search by stored id)."""
        with self._lock.read():
            n = self.count
            if n == 0:
                return [[] for _ in range(len(queries))]
            fetch = min(k + (1 if any(exclude) else 0), n)
            scores, keys = self._index.search(queries, fetch)
            results = []
            for row in range(len(queries)):
                skip = exclude[row] if row < len(exclude) else None
                hits = []
                for score, key in zip(scores[row], keys[row], strict=True):
                    if key < 0:
                        continue
                    point_id = self._id_of[int(key)]
                    if point_id == skip:
                        continue
                    hits.append(Hit(point_id, float(score), self._metadata[point_id]))
                results.append(hits[:k])
            return results

    def export_points(self) -> tuple[list[str], np.ndarray, list[Metadata]]:
        """Every point, for snapshots."""
        with self._lock.read():
            keys = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            vectors = (
                self._index.index.reconstruct_n(0, self._index.ntotal)
                if self._index.ntotal
                else np.zeros((0, self.config.dim), np.float32)
            )
            ids = [self._id_of[int(k)] for k in keys]
            return ids, vectors, [self._metadata[i] for i in ids]
