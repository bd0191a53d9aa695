"""Exact search of flat collections on the GPU: the vectors resident on the device in fp16, scored and ranked there.

One ONNX Runtime graph per metric, `TopK(Gemm(queries, vectors, bias, transB=1), k)`, runs over the
collection's rows where they live on the device (IO binding to the device buffer; nothing but the queries
and the top-k rows crosses the bus). A `DeviceMirror` per collection keeps those rows in step with the
collection, lazily: a search first uploads the rows written since the last one (new keys only ever append:
a key's vector never changes) and the death of deleted or replaced keys (a bias of -inf). The
candidates it returns, `k + RERANK_MARGIN` per query, are re-scored exactly in float32 from the collection's
own vectors on the host, so scores equal the CPU's brute force and the ranking differs only where fp16
rounding reorders points at the edge of the margin (ties).

fp16 range. Rows are stored divided by a power of two `scale` >= their largest norm (cosine: 1), so every
stored component and score stays within [-1, 1]·|query|: ip and cosine queries are normalised (ranking by
inner product does not depend on the query's norm); l2 queries are divided by the same scale, and one further
than L2_MAX_QUERY_NORM scales out is scored on the CPU instead (its fp16 scores would lose the ranking).
Scores: ip / cosine `q'·x'`, l2 `2 q'·x' - |x'|²` (the order of `-|q - x|²`), larger is nearer.

Memory, bounded: resident, (2·dim + 2) bytes per row (fp16 vector + fp16 bias; 770 bytes at 384-d, 1M rows
in 0.77 GB), for every key the collection has issued (dead keys keep their row until the collection's key
space is compacted by a restart), capacity grown by a quarter at a time; all mirrors together within
`search_device_max_bytes` (a collection that does not fit is searched on the CPU, with a warning). Per call,
at most `search_device_workspace_bytes` of scores: queries are scored in chunks of
workspace / (BYTES_PER_SCORE · rows).

The same code runs on ONNX Runtime's CPU provider (`JEPA_SEARCH_DEVICE=onnx_cpu`): that is how the tests check
it against numpy, and how the benchmark's dry run exercises it; on a CPU, FAISS is faster, and the default.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from service.index.onnx_graph import FLOAT, FLOAT16, INT64, Node, Tensor, model_bytes

if TYPE_CHECKING:
    from service.config import SearchConfig

log = logging.getLogger(__name__)

RERANK_MARGIN = 8  # candidates past k re-scored exactly: fp16 ties at the edge of the top k land inside
BYTES_PER_SCORE = 16  # workspace per (query, row) of a call: the fp16 score and TopK's working copies
L2_MAX_QUERY_NORM = 16.0  # in units of the collection's scale; past it an l2 query is scored on the CPU
GROWTH = 1.25
MIN_ROWS = 1024
WRITE_ROWS = 65_536  # rows per upload: bounds the float32 staging copy on the host
PROVIDERS = {"cuda": "CUDAExecutionProvider", "onnx_cpu": "CPUExecutionProvider"}


def score_graph(alpha: float) -> bytes:
    """queries (B, D) float32, vectors (N, D) fp16, bias (N,) fp16, k (1,) -> the top k scores and rows."""
    nodes = [
        Node("Cast", ["queries"], ["queries16"], {"to": FLOAT16}),
        Node("Gemm", ["queries16", "vectors", "bias"], ["scores"], {"transB": 1, "alpha": alpha}),
        Node("TopK", ["scores", "k"], ["top_scores", "top_rows"], {"largest": 1, "sorted": 1}),
    ]
    inputs = [Tensor("queries", FLOAT, ["B", "D"]), Tensor("vectors", FLOAT16, ["N", "D"]),
              Tensor("bias", FLOAT16, ["N"]), Tensor("k", INT64, [1])]
    outputs = [Tensor("top_scores", FLOAT16, ["B", "K"]), Tensor("top_rows", INT64, ["B", "K"])]
    return model_bytes("exact_top_k", nodes, inputs, outputs)


def cast_graph() -> bytes:
    """float32 (flattened) -> fp16; its output is bound to a slice of a device buffer: an upload into place."""
    return model_bytes("upload_fp16", [Node("Cast", ["host"], ["device"], {"to": FLOAT16})],
                       [Tensor("host", FLOAT, ["R"])], [Tensor("device", FLOAT16, ["R"])])


class SearchDevice:
    """The device, its graphs and its memory budget: one per app, shared by every collection's mirror."""

    def __init__(self, provider: str, *, max_bytes: int, workspace_bytes: int, device_id: int = 0) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3

        def session(graph: bytes) -> ort.InferenceSession:
            return ort.InferenceSession(graph, sess_options=options, providers=[provider])

        self.provider = provider
        self.device_type = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
        self.device_id = device_id
        self.max_bytes = max_bytes
        self.workspace_bytes = workspace_bytes
        self._scores = {"ip": session(score_graph(1.0)), "l2": session(score_graph(2.0))}
        self._cast = session(cast_graph())
        self._budget = threading.Lock()
        self.reserved_bytes = 0
        self.failed = False  # an engine call raised: every collection is searched on the CPU from then on

    @classmethod
    def from_config(cls, search: SearchConfig) -> SearchDevice | None:
        """The device named by `search.device`, or None for FAISS on the CPU (auto without a CUDA server)."""
        choice = search.device
        if choice == "auto":
            from service.runtime.onnx import available_providers

            on_cuda = search.providers != "cpu" and available_providers(search.providers)[0] in (
                "CUDAExecutionProvider", "TensorrtExecutionProvider")
            choice = "cuda" if on_cuda else "faiss"
        if choice == "faiss":
            return None
        if PROVIDERS[choice] not in ort.get_available_providers():
            raise RuntimeError(f"JEPA_SEARCH_DEVICE={choice}: ONNX Runtime here has no {PROVIDERS[choice]}")
        device = cls(PROVIDERS[choice], max_bytes=search.max_bytes, workspace_bytes=search.workspace_bytes)
        log.info("flat collections are searched on %s (up to %d MB resident, %d MB of scores per call)",
                 PROVIDERS[choice], search.max_bytes >> 20, search.workspace_bytes >> 20)
        return device

    def fail(self, collection: str) -> None:
        """Stop using the device (called from an `except` block: the traceback is logged, once)."""
        if not self.failed:
            self.failed = True
            log.exception("device search failed (collection %s); flat collections are searched by FAISS on the "
                          "CPU from now on", collection)

    # -- memory -----------------------------------------------------------------------

    def reserve(self, nbytes: int) -> bool:
        with self._budget:
            if self.reserved_bytes + nbytes > self.max_bytes:
                return False
            self.reserved_bytes += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._budget:
            self.reserved_bytes -= nbytes

    def allocate(self, shape: list[int]) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float16, self.device_type, self.device_id)

    def upload(self, target: ort.OrtValue, offset: int, values: np.ndarray) -> None:
        """Write float32 `values` as fp16 into `target` from element `offset` on (converted on the device)."""
        flat = np.ascontiguousarray(values, np.float32).reshape(-1)
        if not len(flat):
            return
        binding = self._cast.io_binding()
        binding.bind_cpu_input("host", flat)
        binding.bind_output("device", self.device_type, self.device_id, np.float16, [len(flat)],
                            target.data_ptr() + 2 * offset)
        self._cast.run_with_iobinding(binding)

    # -- search -----------------------------------------------------------------------

    def top_k(self, metric: str, queries: np.ndarray, vectors: ort.OrtValue, bias: ort.OrtValue, rows: int,
              k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best of the first `rows` rows for each query: (Q, k) fp16 scores and int64 rows."""
        dim = queries.shape[1]
        session = self._scores["l2" if metric == "l2" else "ip"]
        chunk = max(1, self.workspace_bytes // (BYTES_PER_SCORE * rows))
        scores, found = [], []
        for lo in range(0, len(queries), chunk):
            binding = session.io_binding()
            binding.bind_cpu_input("queries", np.ascontiguousarray(queries[lo : lo + chunk], np.float32))
            binding.bind_input("vectors", self.device_type, self.device_id, np.float16, [rows, dim],
                               vectors.data_ptr())
            binding.bind_input("bias", self.device_type, self.device_id, np.float16, [rows], bias.data_ptr())
            binding.bind_cpu_input("k", np.array([k], np.int64))
            binding.bind_output("top_scores", "cpu")
            binding.bind_output("top_rows", "cpu")
            session.run_with_iobinding(binding)
            top_scores, top_rows = binding.copy_outputs_to_cpu()
            scores.append(top_scores)
            found.append(top_rows)
        return np.concatenate(scores), np.concatenate(found)


class DeviceMirror:
    """One flat collection's rows on the device (row = the collection's internal key), synced on search.

    The collection calls `forget` under its write lock and `candidates` under its read lock, so no write
    runs while a search syncs; the mirror's own lock orders concurrent searches' syncs.
    """

    def __init__(self, device: SearchDevice, name: str, dim: int, metric: str) -> None:
        self.device = device
        self.name = name
        self.dim = dim
        self.metric = metric
        self._lock = threading.Lock()
        self._buffers: tuple[ort.OrtValue, ort.OrtValue] | None = None  # (capacity, dim) vectors, (capacity,) bias
        self._bias_host = np.zeros(0, np.float32)  # what the device's bias holds, kept to upload ranges of it
        self._capacity = 0
        self._rows = 0  # keys uploaded: the device holds rows [0, _rows)
        self._scale = 1.0
        self._dirty: tuple[int, int] | None = None  # bias rows changed since the last upload
        self._warned = False  # over the budget was logged once

    @property
    def resident_bytes(self) -> int:
        return self._capacity * (2 * self.dim + 2)

    def forget(self, keys: list[int]) -> None:
        """These keys died (deleted or replaced): hide their uploaded rows from the next search."""
        with self._lock:
            uploaded = [k for k in keys if k < self._rows]
            if not uploaded:
                return  # not on the device yet: their upload reads them as dead
            self._bias_host[uploaded] = -np.inf
            lo, hi = min(uploaded), max(uploaded) + 1
            self._dirty = (lo, hi) if self._dirty is None else (min(lo, self._dirty[0]), max(hi, self._dirty[1]))

    def release(self) -> None:
        """Give the device memory back (the collection was dropped, or is no longer flat); the collection holds its
        write lock, so no search is using it."""
        with self._lock:
            self._free()
            self._warned = False

    def candidates(self, queries: np.ndarray, fetch: int, vectors: np.ndarray, alive: np.ndarray,
                   next_key: int) -> np.ndarray | None:
        """(Q, C) keys, C = min(fetch + RERANK_MARGIN, rows), best first by fp16 score, -1 for no point; None when
        the CPU must answer (no room on the device, an l2 query out of fp16's range, a device that failed)."""
        if self.device.failed:
            return None
        try:
            with self._lock:
                if not self._sync(vectors, alive, next_key):
                    return None
                rows, scale, buffers = self._rows, self._scale, self._buffers
            scaled = self._scaled_queries(queries, scale)
            if scaled is None or buffers is None or rows == 0:
                return None
            top_scores, top_rows = self.device.top_k(self.metric, scaled, *buffers, rows,
                                                     min(fetch + RERANK_MARGIN, rows))
        except Exception:  # an engine error must cost speed, not the search
            self.device.fail(self.name)
            return None
        return np.where(np.isneginf(top_scores.astype(np.float32)), -1, top_rows)

    def _scaled_queries(self, queries: np.ndarray, scale: float) -> np.ndarray | None:
        if self.metric != "l2":
            norms = np.linalg.norm(queries, axis=1, keepdims=True)
            return queries / np.where(norms > 0, norms, 1.0)
        scaled = queries / scale
        if np.linalg.norm(scaled, axis=1).max(initial=0.0) > L2_MAX_QUERY_NORM:
            return None
        return scaled

    # -- keeping the device in step (mirror lock held) ------------------------------------

    def _sync(self, vectors: np.ndarray, alive: np.ndarray, next_key: int) -> bool:
        """Upload what changed since the last search; False when the rows do not fit the budget."""
        if next_key > self._capacity:
            return self._upload_all(vectors, alive, next_key)
        if next_key > self._rows:
            norms = self._norms(vectors, self._rows, next_key)
            if norms.max(initial=0.0) > self._scale:  # a larger vector than any before: a new scale for all
                return self._upload_all(vectors, alive, next_key)
            self._upload_rows(vectors, alive, self._rows, next_key, norms)
            self._rows = next_key
        if self._dirty is not None and self._buffers is not None:
            lo, hi = self._dirty
            self.device.upload(self._buffers[1], lo, self._bias_host[lo:hi])
        self._dirty = None
        return True

    def _norms(self, vectors: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Norms of rows [lo, hi) in float64 (cosine rows are unit vectors: no need to look)."""
        if self.metric == "cosine":
            return np.ones(hi - lo)
        return np.linalg.norm(vectors[lo:hi].astype(np.float64), axis=1)

    def _upload_all(self, vectors: np.ndarray, alive: np.ndarray, next_key: int) -> bool:
        self._free()
        capacity = max(MIN_ROWS, math.ceil(next_key * GROWTH))
        if not self.device.reserve(capacity * (2 * self.dim + 2)):
            if not self._warned:
                self._warned = True
                log.warning("collection %s: %d rows do not fit the device search budget (%d of %d bytes "
                            "reserved): searched on the CPU", self.name, next_key, self.device.reserved_bytes,
                            self.device.max_bytes)
            return False
        self._capacity = capacity
        self._buffers = self.device.allocate([capacity, self.dim]), self.device.allocate([capacity])
        self._bias_host = np.full(capacity, -np.inf, np.float32)
        norms = self._norms(vectors, 0, next_key)
        # A power of two at or above the largest norm: dividing by it is exact, and every |x'| <= 1.
        self._scale = 2.0 ** math.ceil(math.log2(max(float(norms.max(initial=0.0)), 1e-30)))
        self._upload_rows(vectors, alive, 0, next_key, norms)
        self._rows, self._dirty = next_key, None
        return True

    def _free(self) -> None:
        self.device.release(self.resident_bytes)
        self._buffers = None
        self._bias_host = np.zeros(0, np.float32)
        self._capacity = self._rows = 0
        self._dirty = None

    def _upload_rows(self, vectors: np.ndarray, alive: np.ndarray, lo: int, hi: int, norms: np.ndarray) -> None:
        """Rows [lo, hi) and their bias; `norms`: the float64 norms of those rows."""
        assert self._buffers is not None
        device_vectors, device_bias = self._buffers
        for start in range(lo, hi, WRITE_ROWS):
            stop = min(start + WRITE_ROWS, hi)
            self.device.upload(device_vectors, start * self.dim, vectors[start:stop] / np.float32(self._scale))
        bias = -((norms / self._scale) ** 2) if self.metric == "l2" else np.zeros(hi - lo)
        self._bias_host[lo:hi] = np.where(alive[lo:hi], bias, -np.inf)
        self.device.upload(device_bias, lo, self._bias_host[lo:hi])
