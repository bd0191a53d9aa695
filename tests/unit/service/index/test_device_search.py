"""The GPU search path (service/index/device_search.py), run on ONNX Runtime's CPU provider: its results equal numpy
brute force for every metric, through deletes, replacements, upserts after load, filters on both the exact-subset
and the over-fetch path, vectors far from unit norm; its memory stays within the budget and is given back."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service.index.collection import Collection, CollectionConfig, exact_scores
from service.index.device_search import SearchDevice, cast_graph, score_graph
from service.index.filters import compile_filter

DIM = 24
# The same checks on a GPU where ONNX Runtime has CUDA (loadtests/gpu/check.sh runs this file there).
PROVIDERS = ["CPUExecutionProvider"] + [p for p in ort.get_available_providers() if p == "CUDAExecutionProvider"]


def cpu_device(max_bytes: int = 1 << 30, workspace_bytes: int = 1 << 20) -> SearchDevice:
    return SearchDevice("CPUExecutionProvider", max_bytes=max_bytes, workspace_bytes=workspace_bytes)


class Counting(SearchDevice):
    """Counts the searches that ran on the device (the CPU may answer instead, and equal results would hide it)."""

    calls = 0

    def top_k(self, *args, **kwargs):
        self.calls += 1
        return super().top_k(*args, **kwargs)


def test_the_hand_written_graphs_are_valid_onnx_equal_to_onnx_helpers():
    for graph in (score_graph(2.0), cast_graph()):
        onnx.checker.check_model(onnx.load_from_string(graph), full_check=True)
    ours = onnx.load_from_string(score_graph(2.0)).graph
    theirs = helper.make_graph(
        [helper.make_node("Cast", ["queries"], ["queries16"], to=TensorProto.FLOAT16),
         helper.make_node("Gemm", ["queries16", "vectors", "bias"], ["scores"], transB=1, alpha=2.0),
         helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_rows"], largest=1, sorted=1)],
        "exact_top_k",
        [helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["B", "D"]),
         helper.make_tensor_value_info("vectors", TensorProto.FLOAT16, ["N", "D"]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT16, ["N"]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("top_scores", TensorProto.FLOAT16, ["B", "K"]),
         helper.make_tensor_value_info("top_rows", TensorProto.INT64, ["B", "K"])])
    assert ours.SerializeToString() == theirs.SerializeToString()


def brute_force(points: dict[str, np.ndarray], queries: np.ndarray, metric: str, k: int,
                allowed: set[str] | None = None) -> list[list[tuple[str, float]]]:
    ids = [i for i in points if allowed is None or i in allowed]
    stored = np.stack([points[i] for i in ids]).astype(np.float32)
    if metric == "cosine":
        stored = stored / np.linalg.norm(stored, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = exact_scores(queries.astype(np.float32), stored, metric)
    order = np.argsort(scores if metric == "l2" else -scores, axis=1, kind="stable")[:, :k]
    return [[(ids[j], float(scores[q, j])) for j in row] for q, row in enumerate(order)]


def assert_same(collection: Collection, points: dict, queries: np.ndarray, metric: str, k: int, spec=None) -> None:
    allowed = None
    if spec is not None:
        predicate = compile_filter(spec)
        allowed = {i for i, m in META.items() if i in points and predicate(m)}
    expected = brute_force(points, queries, metric, k, allowed)
    got = collection.search(collection.prepare_vectors(queries), k, filter=spec)
    for q, (want, hits) in enumerate(zip(expected, got, strict=True)):
        assert [h.id for h in hits] == [i for i, _ in want], (metric, q, spec)
        scale = max(1.0, max(abs(s) for _, s in want))
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in want], rtol=1e-4, atol=1e-5 * scale)


META: dict[str, dict] = {}


def upsert(collection: Collection, points: dict, ids: list[str], vectors: np.ndarray) -> None:
    for i, point_id in enumerate(ids):
        META[point_id] = {"bucket": int(point_id.split("-")[1]) % 100}
        points[point_id] = vectors[i]
    collection.upsert(ids, collection.prepare_vectors(vectors), [META[i] for i in ids])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("magnitude", [1.0, 3e4])
def test_device_search_equals_brute_force_through_writes_and_filters(metric, magnitude, provider):
    rng = np.random.default_rng(7)
    device = Counting(provider, max_bytes=1 << 30, workspace_bytes=1 << 17)  # 1-2 queries a call
    # filter_exact_max_*: small, so that filters over 30 % of the points take the over-fetch path (the index).
    collection = Collection(CollectionConfig(name="g", dim=DIM, metric=metric, params={
        "filter_exact_max_points": 50, "filter_exact_max_fraction": 0.01}), background=False, device=device)
    points: dict[str, np.ndarray] = {}
    upsert(collection, points, [f"p-{i}" for i in range(3000)], magnitude * rng.standard_normal((3000, DIM)))
    queries = magnitude * rng.standard_normal((7, DIM))
    assert_same(collection, points, queries, metric, 10)
    assert device.calls == 1
    assert device.reserved_bytes > 0

    # deletes (two in three: dead rows would crowd the candidates) and replacements after the first upload, then
    # more points than the first allocation holds
    gone = [f"p-{i}" for i in range(3000) if i % 3]
    collection.delete(gone)
    for point_id in gone:
        del points[point_id]
    upsert(collection, points, [f"p-{i}" for i in range(0, 300, 3)], magnitude * rng.standard_normal((100, DIM)))
    assert_same(collection, points, queries, metric, 10)  # within the first allocation: only the changes uploaded
    upsert(collection, points, [f"p-{i}" for i in range(3000, 6000)], magnitude * rng.standard_normal((3000, DIM)))
    assert_same(collection, points, queries, metric, 10)
    assert_same(collection, points, queries[:1], metric, 1)
    # a vector far larger than any before: every row is uploaded again under a new scale
    upsert(collection, points, ["p-6000"], 50 * magnitude * rng.standard_normal((1, DIM)))
    assert_same(collection, points, queries, metric, 5)
    for spec in ({"bucket": {"lt": 30}}, {"bucket": {"gte": 50}}, {"bucket": 7}):
        assert_same(collection, points, queries, metric, 10, spec)
    assert device.calls >= 6
    collection.release_device()
    assert device.reserved_bytes == 0


def test_an_l2_query_beyond_fp16_range_is_answered_exactly_on_the_cpu():
    rng = np.random.default_rng(3)
    device = Counting("CPUExecutionProvider", max_bytes=1 << 30, workspace_bytes=1 << 20)
    collection = Collection(CollectionConfig(name="far", dim=DIM, metric="l2"), background=False, device=device)
    points: dict[str, np.ndarray] = {}
    upsert(collection, points, [f"p-{i}" for i in range(500)], rng.standard_normal((500, DIM)))
    assert_same(collection, points, 300 * rng.standard_normal((2, DIM)), "l2", 5)  # |q| about 190 scales out
    assert device.calls == 0
    assert_same(collection, points, rng.standard_normal((2, DIM)), "l2", 5)
    assert device.calls == 1


def test_a_collection_over_the_budget_is_searched_on_the_cpu_and_memory_is_given_back():
    rng = np.random.default_rng(4)
    small = Counting("CPUExecutionProvider", max_bytes=3000 * (2 * DIM + 2), workspace_bytes=1 << 20)
    first = Collection(CollectionConfig(name="a", dim=DIM, metric="ip"), background=False, device=small)
    second = Collection(CollectionConfig(name="b", dim=DIM, metric="ip"), background=False, device=small)
    points: dict[str, np.ndarray] = {}
    upsert(first, points, [f"a-{i}" for i in range(800)], rng.standard_normal((800, DIM)))
    upsert(second, {}, [f"b-{i}" for i in range(2000)], rng.standard_normal((2000, DIM)))
    assert_same(first, points, rng.standard_normal((2, DIM)), "ip", 3)
    assert small.calls == 1
    assert small.reserved_bytes == 1024 * (2 * DIM + 2)  # the first allocation: 1,024 rows
    second.search(second.prepare_vectors(rng.standard_normal((2, DIM))), 3)  # 2,500 more rows do not fit: the CPU
    assert small.calls == 1
    first.release_device()
    assert small.reserved_bytes == 0
    second.search(second.prepare_vectors(rng.standard_normal((2, DIM))), 3)  # now they fit
    assert small.calls == 2


def test_a_collection_that_outgrows_flat_gives_its_device_memory_back():
    rng = np.random.default_rng(5)
    device = cpu_device()
    collection = Collection(CollectionConfig(name="auto", dim=DIM, index="auto", params={"auto_hnsw_from": 400}),
                            background=False, device=device)
    collection.upsert([f"p-{i}" for i in range(300)], collection.prepare_vectors(rng.standard_normal((300, DIM))),
                      [{}] * 300)
    collection.search(collection.prepare_vectors(rng.standard_normal((1, DIM))), 3)
    assert device.reserved_bytes > 0
    collection.upsert([f"q-{i}" for i in range(200)], collection.prepare_vectors(rng.standard_normal((200, DIM))),
                      [{}] * 200)
    assert collection.index_in_use == "hnsw"
    assert device.reserved_bytes == 0


def test_an_engine_error_on_the_device_costs_speed_not_the_search(caplog):
    rng = np.random.default_rng(6)

    class Broken(Counting):
        def top_k(self, *args, **kwargs):
            super().top_k(*args, **kwargs)
            raise RuntimeError("CUDA failure 700: an illegal memory access")

    device = Broken("CPUExecutionProvider", max_bytes=1 << 30, workspace_bytes=1 << 20)
    collection = Collection(CollectionConfig(name="broken", dim=DIM, metric="ip"), background=False, device=device)
    points: dict[str, np.ndarray] = {}
    upsert(collection, points, [f"p-{i}" for i in range(400)], rng.standard_normal((400, DIM)))
    for _ in range(2):
        assert_same(collection, points, rng.standard_normal((3, DIM)), "ip", 5)  # answered by FAISS
    assert device.calls == 1  # tried once, then no more
    assert device.failed
    assert [r.levelname for r in caplog.records if "device search failed" in r.message] == ["ERROR"]
