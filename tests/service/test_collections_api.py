"""Collections through the HTTP API: index kinds, search parameters, metadata filters, bad input that stores
nothing, persistence across restarts (torch-free fake model). Tests taking `store_client` / `store_settings` run
on every storage backend: local, redis and milvus (tests/service/conftest.py)."""

import json
import time

import numpy as np
import pytest

from tests.conftest import serving
from tests.support.fake_repository import DIM
from tests.support.record import record
from tests.support.toolkit import assert_error, b64


@pytest.fixture
def model_repository(fake_repository):
    """The torch-free fake model: these tests are about the HTTP edge, not what a real model computes."""
    return fake_repository


def error_code(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["code"]


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat", "ivf_pq", "auto"])
def test_kinds_filters_and_params_over_http(store_client, backend, kind):
    client = store_client
    rng = np.random.default_rng(11)
    stored = rng.standard_normal((600, 16)).astype(np.float32)
    body = {
        "dim": 16,
        "index": kind,
        "params": {"min_train_points": 300, "auto_hnsw_from": 300, "pq_m": 4, "nlist": 16},
    }
    created = client.put(f"/collections/{kind}", json=body)
    if backend == "milvus" and kind == "ivf_pq":  # milvus-lite never builds IVF_PQ: refused, not silently exhaustive
        assert error_code(created, 422) == "invalid_index"
        assert "IVF_PQ" in created.json()["error"]["message"]
        return
    assert created.status_code == 201, created.text
    assert created.json()["index"] == kind
    assert created.json()["params"]["min_train_points"] == 300
    for lo in range(0, 600, 50):
        meta = [{"n": i, "even": i % 2 == 0, "colour": ["red", "green", "blue"][i % 3]} for i in range(lo, lo + 50)]
        r = client.post(
            f"/collections/{kind}/points",
            json={
                "ids": [str(i) for i in range(lo, lo + 50)],
                "vectors": stored[lo : lo + 50].tolist(),
                "metadata": meta,
            },
        )
        assert r.status_code == 200, r.text
    info = client.get(f"/collections/{kind}").json()
    assert info["count"] == 600
    assert info["memory_bytes"] > 600 * 16 * 4
    query = stored[5].tolist()
    r = client.post(
        "/search",
        json={
            "collection": kind,
            "vector": query,
            "k": 5,
            "filter": {"colour": {"in": ["red", "blue"]}, "n": {"gte": 100}},
            "params": {"ef": 64, "nprobe": 64},
        },
    )
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 5
    assert all(h["metadata"]["colour"] in ("red", "blue") and h["metadata"]["n"] >= 100 for h in hits)
    # Unfiltered, with a generous knob, a stored vector finds itself first.
    top = client.post(
        "/search", json={"collection": kind, "vector": query, "k": 1, "params": {"ef": 256, "nprobe": 1000}}
    ).json()
    assert top["hits"][0]["id"] == "5"
    # Delete then search: gone (tombstoned or removed in place).
    client.request("DELETE", f"/collections/{kind}/points", json={"ids": ["5"]})
    top = client.post("/search", json={"collection": kind, "vector": query, "k": 3, "params": {"nprobe": 1000}}).json()
    assert "5" not in [h["id"] for h in top["hits"]]


def test_bad_filters_params_and_kinds_are_4xx(store_client):
    client = store_client
    assert client.put("/collections/c", json={"dim": 4}).status_code == 201
    client.post("/collections/c/points", json={"ids": ["a"], "vectors": [[1, 0, 0, 0]], "metadata": [{"x": 1}]})
    assert (
        error_code(
            client.post("/search", json={"collection": "c", "vector": [1, 0, 0, 0], "filter": {"x": {"near": 1}}}), 422
        )
        == "invalid_filter"
    )
    assert (
        error_code(
            client.post("/search", json={"collection": "c", "vector": [1, 0, 0, 0], "filter": {"x": {"gt": "a"}}}), 422
        )
        == "invalid_filter"
    )
    assert (
        client.post("/search", json={"collection": "c", "vector": [1, 0, 0, 0], "params": {"ef": 0}}).status_code == 422
    )
    assert client.put("/collections/d", json={"dim": 4, "index": "lsh"}).status_code == 422
    assert (
        error_code(client.put("/collections/e", json={"dim": 6, "index": "ivf_pq", "params": {"pq_m": 4}}), 422)
        == "invalid_index"
    )
    assert client.get("/collections/e").status_code == 404
    # The old request shape still works, and the old response fields are all there.
    r = client.post("/search", json={"collection": "c", "vector": [1, 0, 0, 0], "k": 1}).json()
    assert r["hits"][0]["id"] == "a"
    assert r["results"] == [r["hits"]]
    assert r["metric"] == "cosine"


def test_projected_hnsw_is_a_create_option_and_returns_exact_scores(store_client, backend):
    client = store_client
    if backend == "milvus":  # a FAISS-side projection: the milvus backend refuses it rather than ignore it
        bad = client.put("/collections/proj", json={"dim": 32, "index": "hnsw", "params": {"pca": 8}})
        assert error_code(bad, 422) == "invalid_index"
        assert "pca" in bad.json()["error"]["message"]
        return
    rng = np.random.default_rng(12)
    stored = (np.tanh(rng.standard_normal((600, 6)) @ rng.standard_normal((6, 32)))).astype(np.float32)
    body = {"dim": 32, "index": "hnsw", "params": {"M": 16, "ef_construction": 100, "pca": 8, "min_train_points": 300}}
    assert client.put("/collections/proj", json=body).status_code == 201
    for lo in range(0, 600, 50):
        r = client.post("/collections/proj/points",
                        json={"ids": [str(i) for i in range(lo, lo + 50)], "vectors": stored[lo:lo + 50].tolist()})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while (info := client.get("/collections/proj").json())["index_in_use"] != "hnsw" and time.monotonic() < deadline:
        time.sleep(0.05)  # the projection is trained by a background rebuild once min_train_points are in
    assert info["index_in_use"] == "hnsw"
    assert info["params"]["pca"] == 8
    query = stored[7] + 0.01
    r = client.post(
        "/search", json={"collection": "proj", "vector": query.tolist(), "k": 5, "params": {"ef": 64, "rerank": 4}}
    )
    assert r.status_code == 200, r.text
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    exact = unit @ (query / np.linalg.norm(query))
    hits = r.json()["hits"]
    assert [h["id"] for h in hits] == [str(i) for i in np.argsort(-exact)[:5]]
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(exact)[::-1][:5], atol=1e-5)
    bad = client.put("/collections/proj2", json={"dim": 32, "index": "hnsw", "params": {"pca": 64}})
    assert error_code(bad, 422) == "invalid_index"


@pytest.mark.parametrize(
    ("method", "path", "payload", "status"),
    [
        ("post", "/collections/c/points", {"ids": ["a"], "vectors": [[1.0, 2.0]]}, 422),  # wrong dim
        ("post", "/collections/c/points", {"ids": ["a", "b"], "vectors": [[1.0, 2.0, 3.0]]}, 422),  # count mismatch
        ("post", "/collections/c/points", {"ids": ["a"], "vectors": [[1.0, 2.0, 3.0]], "metadata": [{}, {}]}, 422),
        ("post", "/collections/c/points", {"ids": ["a"], "vectors": [[0.0, 0.0, 0.0]]}, 422),  # zero vector, cosine
        ("post", "/collections/missing/points", {"ids": ["a"], "vectors": [[1.0, 2.0, 3.0]]}, 404),
        ("post", "/search", {"collection": "c", "vector": [1.0, 2.0]}, 422),
        ("post", "/search", {"collection": "c", "vector": [1.0, 2.0, 3.0], "k": 0}, 422),
        ("post", "/search", {"collection": "c", "vector": [1.0, 2.0, 3.0], "k": 100000}, 422),
        ("post", "/search", {"collection": "c"}, 422),
        ("post", "/search", {"collection": "missing", "vector": [1.0, 2.0, 3.0]}, 404),
        ("post", "/search", {"collection": "c", "id": "ghost"}, 404),
        ("post", "/search", {"collection": "c", "input": {"image": "aGk="}}, 422),  # no model for this collection
        ("put", "/collections/c", {"dim": 4}, 409),
        ("put", "/collections/-leading-dash", {"dim": 4}, 422),
        ("put", "/collections/..", {"dim": 4}, 404),
        ("put", "/collections/x", {}, 422),
        ("put", "/collections/x", {"model": "fake", "dim": 5}, 422),
        ("put", "/collections/x", {"dim": 4, "metric": "hamming"}, 422),
    ],
)
def test_collection_bad_input_is_a_clear_4xx_and_stores_nothing(store_client, method, path, payload, status):
    store_client.put("/collections/c", json={"dim": 3})
    store_client.post("/collections/c/points", json={"ids": ["keep"], "vectors": [[1.0, 0.0, 0.0]]})
    assert_error(
        getattr(store_client, method)(path, json=payload) if method != "get" else store_client.get(path), status
    )
    assert store_client.get("/collections/c").json()["count"] == 1

def test_nan_in_vectors_is_422(store_client):
    store_client.put("/collections/n", json={"dim": 2})
    body = '{"ids": ["a"], "vectors": [[NaN, 1.0]]}'
    assert_error(
        store_client.post("/collections/n/points", content=body, headers={"content-type": "application/json"}), 422
    )
    assert store_client.get("/collections/n").json()["count"] == 0

def test_collection_lifecycle_and_persistence(store_settings):
    settings = store_settings()
    with serving(settings) as first:
        assert first.put("/collections/keep", json={"dim": 2, "metric": "l2"}).status_code == 201
        assert first.put("/collections/keep", json={"dim": 2, "metric": "l2"}).status_code == 200
        first.post("/collections/keep/points", json={"ids": ["a", "b"], "vectors": [[0, 0], [3, 4]]})
    with serving(settings) as second:
        hits = second.post("/search", json={"collection": "keep", "vector": [0, 0], "k": 2}).json()["hits"]
        assert [(h["id"], h["score"]) for h in hits] == [("a", 0.0), ("b", 25.0)]
        assert [c["name"] for c in second.get("/collections").json()] == ["keep"]
        assert second.delete("/collections/keep").status_code == 204
        assert_error(second.get("/collections/keep"), 404, "collection_not_found")

def test_a_bad_item_in_a_batch_stores_nothing(store_client, photos):
    store_client.put("/collections/atomic", json={"model": "fake"})
    good = b64(photos["coffee"])
    truncated = b64(photos["rocket"][: len(photos["rocket"]) // 3])
    r = store_client.post(
        "/collections/atomic/points",
        json={"ids": ["a", "b", "c"], "inputs": [{"image": good}, {"image": good}, {"image": truncated}]},
    )
    assert_error(r, 400, "invalid_image")
    vectors = json.dumps([[0.1] * DIM, [0.1] * (DIM - 1) + [float("nan")]])  # json.dumps writes NaN
    mixed = store_client.post("/collections/atomic/points", content=f'{{"ids": ["a", "b"], "vectors": {vectors}}}',
                        headers={"content-type": "application/json"})
    assert_error(mixed, 422, "invalid_vector")
    assert store_client.get("/collections/atomic").json()["count"] == 0

def test_oversized_metadata_is_413_and_stores_nothing(store_client):
    store_client.put("/collections/meta", json={"dim": 2})
    huge = {"blob": "x" * 20_000}
    r = store_client.post(
        "/collections/meta/points", json={"ids": ["a", "b"], "vectors": [[1, 0], [0, 1]], "metadata": [{}, huge]}
    )
    assert_error(r, 413, "metadata_too_large")
    assert r.json()["error"]["detail"]["index"] == 1  # the offending point, as in every batch error
    assert store_client.get("/collections/meta").json()["count"] == 0


def test_upserts_and_deletes_racing_a_drop_of_their_collection_get_404_never_500(store_settings, backend):
    """The local store appended to a write-ahead log that a concurrent drop had closed: 500 `I/O operation on
    closed file`. A write that loses the race to a drop answers 404, like one that comes after it."""
    import threading
    from collections import Counter

    statuses: Counter = Counter()
    unexpected: list[str] = []
    done = threading.Event()
    with serving(store_settings()) as client:
        def write(worker: int) -> None:
            n = 0
            while not done.is_set():
                n += 1
                try:
                    if n % 4:
                        r = client.post("/collections/churn/points",
                                        json={"ids": [f"w{worker}-{n}"], "vectors": [[1.0, float(n)]]})
                    else:
                        r = client.request("DELETE", "/collections/churn/points",
                                           json={"ids": [f"w{worker}-{n - 1}"]})
                    statuses[r.status_code] += 1
                    if r.status_code not in (200, 404):
                        unexpected.append(r.text[:300])
                except Exception as exc:  # the test client re-raises what the server raised: a 500 on the wire
                    statuses[500] += 1
                    unexpected.append(repr(exc)[:300])

        writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in writers:
            thread.start()
        try:
            for _ in range(15):
                assert client.put("/collections/churn", json={"dim": 2}).status_code == 201
                before, deadline = sum(statuses.values()), time.monotonic() + 30
                while sum(statuses.values()) < before + 8:  # writes land on the live collection before the drop
                    assert time.monotonic() < deadline, statuses
                    time.sleep(0.001)
                assert client.delete("/collections/churn").status_code == 204
        finally:
            done.set()
            for thread in writers:
                thread.join(30)
    assert set(statuses) <= {200, 404}, (statuses, unexpected[:5])
    assert statuses[200], statuses
    assert statuses[404], statuses
    record(f"upserts and deletes from 4 threads while their collection is dropped and re-created 15 times "
           f"({backend} backend)", writes=sum(statuses.values()), answered_200=statuses[200],
           answered_404=statuses[404], server_errors=0)
