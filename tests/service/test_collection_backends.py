"""Filtered search equals brute force on every backend, at 50 %, 5 % and 0.1 % selectivity, with strict types."""

from __future__ import annotations

import numpy as np
import pytest

from loadtests.milvus_lite_probe import indexed_rows
from service.index.collection import exact_scores
from service.index.filters import compile_filter
from service.index.milvus_store import milvus_name
from tests.conftest import serving
from tests.support.record import record

N, DIM, K = 2000, 16, 10


def metadata(i: int) -> dict:
    # `v` mixes the types a loose engine would confuse: 1, 1.0, true and "1" must stay apart.
    v = [1, 1.0, True, "1", None, [1]][i % 6]
    return {"bucket": i % 1000, "label": f"l{i % 7}", "v": v, "even": i % 2 == 0}


FILTERS = {
    "50%": {"bucket": {"lt": 500}},
    "5%": {"bucket": {"gte": 100, "lt": 150}},
    "0.1%": {"bucket": 7},
    "in + range": {"label": {"in": ["l1", "l3", "zz"]}, "bucket": {"gt": 900}},
    "number 1": {"v": 1},
    "true": {"v": True},
    "string": {"v": {"in": ["1"]}},
    "null": {"v": None},
    "numbers >= 1": {"v": {"gte": 1}},
    "bool false": {"even": False, "bucket": {"lte": 20}},
    "nothing": {"bucket": {"gt": 5000}},
}


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_filtered_search_equals_brute_force_at_every_selectivity(store_settings, backend, index):
    rng = np.random.default_rng(21)
    stored = rng.standard_normal((N, DIM)).astype(np.float32)
    meta = [metadata(i) for i in range(N)]
    with serving(store_settings(max_request_items=1000)) as client:
        assert client.put("/collections/f", json={"dim": DIM, "index": index}).status_code == 201
        for lo in range(0, N, 1000):
            r = client.post(
                "/collections/f/points",
                json={
                    "ids": [str(i) for i in range(lo, lo + 1000)],
                    "vectors": stored[lo : lo + 1000].tolist(),
                    "metadata": meta[lo : lo + 1000],
                },
            )
            assert r.status_code == 200, r.text
            if backend == "milvus" and lo == 0:  # the first half in a sealed, indexed segment, the rest buffered
                store = client.app.state.services.store
                store.flush("f")
                assert sum(indexed_rows(store.uri, milvus_name(store.prefix, "f")).values()) == 1000
        unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
        queries = rng.standard_normal((3, DIM)).astype(np.float32)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        for label, spec in FILTERS.items():
            predicate = compile_filter(spec)
            allowed = np.array([i for i in range(N) if predicate(meta[i])], dtype=np.int64)
            r = client.post("/search", json={"collection": "f", "vectors": queries.tolist(), "k": K, "filter": spec})
            assert r.status_code == 200, r.text
            for row, hits in enumerate(r.json()["results"]):
                if len(allowed) == 0:
                    assert hits == [], label
                    continue
                scores = q[row] @ unit[allowed].T
                expected = allowed[np.argsort(-scores, kind="stable")[:K]]
                assert [h["id"] for h in hits] == [str(i) for i in expected], (label, row)
                np.testing.assert_allclose([h["score"] for h in hits], np.sort(scores)[::-1][:K], atol=1e-5)
                assert all(predicate(h["metadata"]) for h in hits), label


@pytest.mark.parametrize("vote", ["majority", "weighted"])
def test_knn_classify_equals_a_brute_force_vote_on_every_backend(store_settings, backend, vote):
    from tests.service.test_classify_api import brute_force_vote

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, DIM))
    classes = rng.integers(0, 4, 300)
    vectors = (centres[classes] + rng.normal(size=(300, DIM))).astype(np.float32)
    labels = [f"c{c}" for c in classes]
    queries = rng.normal(size=(5, DIM)).astype(np.float32)
    with serving(store_settings()) as client:
        assert client.put("/collections/knn", json={"dim": DIM, "metric": "cosine"}).status_code == 201
        stored = client.post("/collections/knn/points", json={
            "ids": [str(i) for i in range(300)], "vectors": vectors.tolist(),
            "metadata": [{"label": x} for x in labels]})
        assert stored.status_code == 200, stored.text
        response = client.post("/classify", json={"collection": "knn", "vectors": queries.tolist(), "k": 7,
                                                  "vote": vote, "top_k": 4})
    assert response.status_code == 200, response.text
    for query, got in zip(queries, response.json()["labels"], strict=True):
        expected = brute_force_vote(vectors, labels, query, 7, vote)
        assert [g["label"] for g in got] == [e[0] for e in expected], backend
        np.testing.assert_allclose([g["score"] for g in got], [e[1] for e in expected], rtol=1e-4)


def test_large_finite_vectors_are_stored_faithfully_or_refused_never_broken(store_settings, backend):
    """A float32 norm of [3e38] * 4 overflowed: cosine stored zeros (and scored every point 0), l2 returned fewer
    hits than points, ip answered `"score": null`."""
    huge = [3e38] * 4
    with serving(store_settings()) as client:
        assert client.put("/collections/cos", json={"dim": 4, "metric": "cosine"}).status_code == 201
        stored = client.post("/collections/cos/points", json={"ids": ["huge", "unit"],
                                                              "vectors": [huge, [1.0, 0.0, 0.0, 0.0]]})
        assert stored.status_code == 200, stored.text
        np.testing.assert_allclose(client.get("/collections/cos/points/huge").json()["vector"], [0.5] * 4, rtol=1e-6)
        hits = client.post("/search", json={"collection": "cos", "vector": huge, "k": 2}).json()["hits"]
        assert [h["id"] for h in hits] == ["huge", "unit"]
        np.testing.assert_allclose([h["score"] for h in hits], [1.0, 0.5], rtol=1e-6)
        for metric in ("ip", "l2"):
            assert client.put(f"/collections/{metric}", json={"dim": 4, "metric": metric}).status_code == 201
            refused = client.post(f"/collections/{metric}/points", json={"ids": ["a", "b"],
                                                                       "vectors": [[1.0] * 4, huge]})
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "invalid_vector"
            assert error["detail"]["index"] == 1
            assert "overflow float32" in error["message"]
            assert client.get(f"/collections/{metric}").json()["count"] == 0
            # The largest accepted norm still scores every point with a finite number.
            big = [4e18] * 4  # norm 8e18
            ok = client.post(f"/collections/{metric}/points", json={"ids": ["a", "b", "c"],
                                                                  "vectors": [big, [-4e18] * 4, [1.0] * 4]})
            assert ok.status_code == 200, ok.text
            found = client.post("/search", json={"collection": metric, "vector": big, "k": 3}).json()["hits"]
            assert len(found) == 3, found
            assert all(isinstance(h["score"], float) and np.isfinite(h["score"]) for h in found), found
            query = client.post("/search", json={"collection": metric, "vector": huge, "k": 3})
            assert query.status_code == 422, query.text
        record("vectors too large for float32 scores", case=backend,
               refused="cosine normalised in float64 (stored, found); ip and l2 above norm 9.2e18: 422")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_flat_search_on_the_device_path_equals_brute_force_over_http(store_settings, backend, metric):
    """JEPA_SEARCH_DEVICE=onnx_cpu: the GPU search path (fp16 on the device, re-scored exactly) on ONNX Runtime's
    CPU provider, through HTTP, with writes between searches and a filter; milvus searches in its own engine."""
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((1200, DIM)).astype(np.float32)
    meta = [{"bucket": i % 10} for i in range(1200)]
    with serving(store_settings(search_device="onnx_cpu", max_request_items=1000)) as client:
        assert client.put("/collections/d", json={"dim": DIM, "metric": metric}).status_code == 201
        alive = set()
        for lo, hi in ((0, 800), (800, 1200)):
            r = client.post("/collections/d/points", json={"ids": [str(i) for i in range(lo, hi)],
                                                           "vectors": vectors[lo:hi].tolist(), "metadata": meta[lo:hi]})
            assert r.status_code == 200, r.text
            alive |= set(range(lo, hi))
            gone = [str(i) for i in range(lo, hi, 4)]
            assert client.request("DELETE", "/collections/d/points", json={"ids": gone}).status_code == 200
            alive -= {int(i) for i in gone}
            queries = rng.standard_normal((3, DIM)).astype(np.float32)
            for spec in (None, {"bucket": {"lt": 5}}):
                keep = np.array(sorted(i for i in alive if spec is None or meta[i]["bucket"] < 5))
                r = client.post("/search", json={"collection": "d", "vectors": queries.tolist(), "k": K,
                                                 "filter": spec})
                assert r.status_code == 200, r.text
                stored = vectors[keep]
                if metric == "cosine":
                    stored = stored / np.linalg.norm(stored, axis=1, keepdims=True)
                    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
                else:
                    q = queries
                scores = exact_scores(q, stored, metric)
                order = np.argsort(scores if metric == "l2" else -scores, axis=1, kind="stable")[:, :K]
                for row, hits in enumerate(r.json()["results"]):
                    assert [h["id"] for h in hits] == [str(i) for i in keep[order[row]]], (spec, row)
                    np.testing.assert_allclose([h["score"] for h in hits], scores[row, order[row]], rtol=1e-4,
                                               atol=1e-5)
        store = client.app.state.services.store
        if backend != "milvus":
            assert store.device.reserved_bytes > 0  # the device path answered, not FAISS
