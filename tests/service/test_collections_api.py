"""Index kinds, search parameters and metadata filters through the HTTP API."""

import numpy as np
import pytest


def error_code(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["code"]


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat", "ivf_pq", "auto"])
def test_kinds_filters_and_params_over_http(client, kind):
    rng = np.random.default_rng(11)
    stored = rng.standard_normal((600, 16)).astype(np.float32)
    body = {"dim": 16, "index": kind, "params": {"min_train_points": 300, "auto_hnsw_from": 300, "pq_m": 4}}
    created = client.put(f"/collections/{kind}", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["index"] == kind and created.json()["params"]["min_train_points"] == 300
    for lo in range(0, 600, 50):
        meta = [{"n": i, "even": i % 2 == 0, "colour": ["red", "green", "blue"][i % 3]} for i in range(lo, lo + 50)]
        r = client.post(f"/collections/{kind}/points",
                        json={"ids": [str(i) for i in range(lo, lo + 50)], "vectors": stored[lo:lo + 50].tolist(), "metadata": meta})
        assert r.status_code == 200, r.text
    info = client.get(f"/collections/{kind}").json()
    assert info["count"] == 600 and info["memory_bytes"] > 600 * 16 * 4
    query = stored[5].tolist()
    r = client.post("/search", json={"collection": kind, "vector": query, "k": 5,
                                      "filter": {"colour": {"in": ["red", "blue"]}, "n": {"gte": 100}}, "params": {"ef": 64, "nprobe": 64}})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 5
    assert all(h["metadata"]["colour"] in ("red", "blue") and h["metadata"]["n"] >= 100 for h in hits)
    # Unfiltered, with a generous knob, a stored vector finds itself first.
    top = client.post("/search", json={"collection": kind, "vector": query, "k": 1, "params": {"ef": 256, "nprobe": 1000}}).json()
    assert top["hits"][0]["id"] == "5"
    # Delete then search: gone (tombstoned or removed in place).
    client.request("DELETE", f"/collections/{kind}/points", json={"ids": ["5"]})
    top = client.post("/search", json={"collection": kind, "vector": query, "k": 3, "params": {"nprobe": 1000}}).json()
    assert "5" not in [h["id"] for h in top["hits"]]


def test_bad_filters_params_and_kinds_are_4xx(client):
    assert client.put("/collections/c", json={"dim": 4}).status_code == 201
    client.post("/collections/c/points", json={"ids": ["a"], "vectors": [[1, 0, 0, 0]], "metadata": [{"x": 1}]})
    assert error_code(client.post("/search", json={"collection": "c", "vector": [1, 0, 0, 0], "filter": {"x": {"near": 1}}}), 422) == "invalid_filter"
    assert error_code(client.post("/search", json={"collection": "c", "vector": [1, 0, 0, 0], "filter": {"x": {"gt": "a"}}}), 422) == "invalid_filter"
    assert client.post("/search", json={"collection": "c", "vector": [1, 0, 0, 0], "params": {"ef": 0}}).status_code == 422
    assert client.put("/collections/d", json={"dim": 4, "index": "lsh"}).status_code == 422
    assert error_code(client.put("/collections/e", json={"dim": 6, "index": "ivf_pq", "params": {"pq_m": 4}}), 422) == "invalid_index"
    assert client.get("/collections/e").status_code == 404
    # The old request shape still works, and the old response fields are all there.
    r = client.post("/search", json={"collection": "c", "vector": [1, 0, 0, 0], "k": 1}).json()
    assert r["hits"][0]["id"] == "a" and r["results"] == [r["hits"]] and r["metric"] == "cosine"
