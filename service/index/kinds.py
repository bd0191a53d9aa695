"""Index kinds: how each FAISS index is built, trained, searched and whether it can remove in place.

A collection keeps every vector itself (see collection.py); the FAISS index
here is only an accelerator that can be rebuilt from those vectors at any
time. That is what makes tombstones + background rebuilds, deferred IVF
training and exact re-ranking possible for every kind.

Kinds:
  flat      exact scan (IndexFlat behind an IndexIDMap); removes in place.
  hnsw      graph (IndexHNSWFlat behind an IndexIDMap); cannot remove: tombstones.
  ivf_flat  inverted lists of full vectors; needs training; removes in place.
  ivf_pq    inverted lists of product-quantised codes, re-ranked exactly; needs training.
  auto      flat while small, hnsw from `auto_hnsw_from` points on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

KINDS = ("flat", "hnsw", "ivf_flat", "ivf_pq", "auto")

# Defaults for `CollectionConfig.params`; a request may override ef / nprobe per search.
DEFAULT_PARAMS: dict[str, Any] = {
    "M": 32,  # HNSW graph degree
    "ef_construction": 200,
    "ef_search": 128,
    "nlist": None,  # IVF lists; None = about 4 * sqrt(points) at training time
    "nprobe": 32,
    "pq_m": None,  # PQ sub-quantisers; None = dim / 4 rounded to a divisor of dim
    "pq_bits": 8,
    "pca": None,  # project to this many dimensions before the ANN index (trained); results re-ranked exactly
    "rerank": None,  # candidates fetched per result and re-scored exactly; None = 4 for ivf_pq, 1 otherwise
    "min_train_points": 5000,  # IVF kinds search exactly until this many points exist
    "auto_hnsw_from": 20000,  # `auto` switches from flat to hnsw at this size
    "rebuild_dead_ratio": 0.2,  # rebuild when tombstoned / indexed exceeds this
    # Filtered search scans the matching subset exactly when it holds at most this many points, or
    # this small a fraction of the collection; otherwise it over-fetches from the index.
    "filter_exact_max_points": 20000,
    "filter_exact_max_fraction": 0.05,
}


def resolve_params(params: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(DEFAULT_PARAMS)
    for key, value in (params or {}).items():
        if key not in DEFAULT_PARAMS:
            raise ValueError(f"unknown index parameter {key!r}; known: {sorted(DEFAULT_PARAMS)}")
        merged[key] = value
    return merged


def kind_for_size(kind: str, count: int, params: dict[str, Any]) -> str:
    """The kind that should serve `count` points: `auto` and untrained IVF fall back to exact flat."""
    if kind == "auto":
        return "hnsw" if count >= params["auto_hnsw_from"] else "flat"
    if kind in ("ivf_flat", "ivf_pq") and count < max(params["min_train_points"], 2 * nlist_for(count, params)):
        return "flat"
    if needs_training(kind, params) and count < params["min_train_points"]:
        return "flat"
    return kind


def needs_training(kind: str, params: dict[str, Any]) -> bool:
    return kind in ("ivf_flat", "ivf_pq") or (kind == "hnsw" and bool(params["pca"]))


def nlist_for(count: int, params: dict[str, Any]) -> int:
    if params["nlist"]:
        return int(params["nlist"])
    return max(8, min(65536, int(4 * math.sqrt(max(count, 1)))))


def pq_m_for(dim: int, params: dict[str, Any]) -> int:
    if params["pq_m"]:
        m = int(params["pq_m"])
        if dim % m:
            raise ValueError(f"pq_m={m} must divide dim={dim}")
        return m
    target = max(1, dim // 4)
    return max(d for d in range(1, target + 1) if dim % d == 0)


def faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def rerank_factor(kind: str, params: dict[str, Any]) -> int:
    if params["rerank"] is not None:
        return max(1, int(params["rerank"]))
    if params["pca"] and kind != "flat":
        return 2
    return 4 if kind == "ivf_pq" else 1


@dataclass
class BuiltIndex:
    """A FAISS index over internal int64 keys, plus what the collection needs to know about it."""

    kind: str
    index: faiss.Index
    removes_in_place: bool
    exact_scores: bool  # False: scores are approximate (PQ), re-rank before returning them
    on_gpu: bool = False

    def search_parameters(self, params: dict[str, Any], fetch: int, selector: faiss.IDSelector | None):
        if self.on_gpu:
            return None  # GPU indexes take their nprobe from the index itself
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(int(params["ef_search"]), fetch), sel=selector)
        if self.kind in ("ivf_flat", "ivf_pq"):
            return faiss.SearchParametersIVF(nprobe=int(params["nprobe"]), sel=selector)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    @property
    def memory_bytes(self) -> int:
        """FAISS's own memory, estimated per kind (serialising to measure would copy the index)."""
        inner = faiss.downcast_index(self.index.index) if isinstance(self.index, faiss.IndexIDMap) else self.index
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
        n, d = self.index.ntotal, inner.d
        if self.kind == "hnsw":
            return n * (4 * d + 8 + 2 * 4 * inner.hnsw.nb_neighbors(0))
        if self.kind == "ivf_pq":
            return n * (inner.code_size + 8) + inner.nlist * d * 4
        if self.kind == "ivf_flat":
            return n * (4 * d + 8) + inner.nlist * d * 4
        return n * (4 * d + 8)


def projection(sample: np.ndarray, out_dim: int) -> faiss.LinearTransform:
    """Orthogonal projection on the top eigenvectors of the *uncentred* second moment of `sample`.

    Uncentred, so inner products are approximated without a per-point bias term
    (a centred PCA changes inner-product rankings); L2 distances are translation-free anyway.
    """
    x = np.asarray(sample, np.float64)
    _, vectors = np.linalg.eigh(x.T @ x)  # ascending eigenvalues
    top = np.ascontiguousarray(vectors[:, ::-1][:, :out_dim].T, dtype=np.float32)  # (out_dim, dim)
    transform = faiss.LinearTransform(x.shape[1], out_dim, False)
    faiss.copy_array_to_vector(top.ravel(), transform.A)
    transform.is_trained = True
    return transform


def build_index(kind: str, dim: int, metric: str, params: dict[str, Any], sample: np.ndarray | None = None) -> BuiltIndex:
    """An empty index of `kind`, trained on `sample` where the kind needs training."""
    if kind != "flat" and params["pca"]:
        out_dim = int(params["pca"])
        if sample is None or len(sample) == 0:
            raise ValueError(f"{kind} with pca needs a training sample")
        transform = projection(sample, out_dim)
        inner = build_index(kind, out_dim, metric, {**params, "pca": None}, transform.apply(np.ascontiguousarray(sample, np.float32)))
        base = inner.index.index if isinstance(inner.index, faiss.IndexIDMap) else inner.index
        pre = faiss.IndexPreTransform(transform, base)
        pre.referenced_objects.append(inner.index)  # owns `base`: it must live as long as `pre`
        index = faiss.IndexIDMap(pre) if kind == "hnsw" else pre
        return BuiltIndex(kind, index, removes_in_place=inner.removes_in_place, exact_scores=False)
    fm = faiss_metric(metric)
    if kind == "flat":
        inner = faiss.IndexFlatL2(dim) if fm == faiss.METRIC_L2 else faiss.IndexFlatIP(dim)
        return BuiltIndex("flat", faiss.IndexIDMap(inner), removes_in_place=True, exact_scores=True)
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, int(params["M"]), fm)
        inner.hnsw.efConstruction = int(params["ef_construction"])
        return BuiltIndex("hnsw", faiss.IndexIDMap(inner), removes_in_place=False, exact_scores=True)
    if kind in ("ivf_flat", "ivf_pq"):
        if sample is None or len(sample) == 0:
            raise ValueError(f"{kind} needs a training sample")
        nlist = min(nlist_for(len(sample), params), max(1, len(sample) // 39))
        quantizer = faiss.IndexFlatL2(dim) if fm == faiss.METRIC_L2 else faiss.IndexFlatIP(dim)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, fm)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m_for(dim, params), int(params["pq_bits"]), fm)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        return BuiltIndex(kind, index, removes_in_place=True, exact_scores=kind == "ivf_flat")
    raise ValueError(f"unknown index kind {kind!r}")


def flags(kind: str, params: dict[str, Any]) -> tuple[bool, bool]:
    """(removes_in_place, exact_scores) of an index of `kind` built with `params` (as build_index makes it)."""
    projected = kind != "flat" and bool(params["pca"])
    return kind != "hnsw", kind in ("flat", "hnsw", "ivf_flat") and not projected


def serialize(built: BuiltIndex) -> np.ndarray | None:
    """The index as bytes for a snapshot; None for GPU indexes (they are rebuilt on load)."""
    if built.on_gpu:
        return None
    return faiss.serialize_index(built.index)


def deserialize(kind: str, params: dict[str, Any], blob: np.ndarray) -> BuiltIndex:
    """An index written by `serialize`, moved to the GPU where one is present (like a fresh build)."""
    removes_in_place, exact = flags(kind, params)
    index = faiss.deserialize_index(np.ascontiguousarray(blob, dtype=np.uint8))
    return to_gpu(BuiltIndex(kind, index, removes_in_place=removes_in_place, exact_scores=exact))


def gpu_available() -> bool:
    """True only when this faiss build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def to_gpu(built: BuiltIndex) -> BuiltIndex:
    """Flat and IVF kinds move to the GPU when present; HNSW stays on the CPU (FAISS has no GPU HNSW)."""
    if not gpu_available() or built.kind == "hnsw":
        return built
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, built.index)
    gpu_index.referenced_resources = resources  # keep the resources alive with the index
    # GPU indexes neither remove ids nor take IDSelectors: deletes become tombstones filtered after search.
    return BuiltIndex(built.kind, gpu_index, removes_in_place=False, exact_scores=built.exact_scores, on_gpu=True)
