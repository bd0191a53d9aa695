"""POST /search through the HTTP API: exact agreement with numpy, media queries through the model, spaces (fake model),
on every storage backend (`store_client`: local, redis and milvus, tests/service/conftest.py)."""



import numpy as np
import pytest

from tests.support.fake_repository import DIM
from tests.support.toolkit import assert_error, b64


@pytest.fixture
def model_repository(fake_repository):
    """The torch-free fake model: these tests are about the HTTP edge, not what a real model computes."""
    return fake_repository


def test_search_agrees_with_numpy_brute_force(store_client):
    rng = np.random.default_rng(5)
    stored = rng.standard_normal((300, 16)).astype(np.float32)
    assert store_client.put("/collections/vec", json={"dim": 16, "metric": "cosine"}).status_code == 201
    for start in range(0, 300, 50):
        ids = [f"v{i}" for i in range(start, start + 50)]
        r = store_client.post("/collections/vec/points", json={"ids": ids, "vectors": stored[start:start + 50].tolist(),
                                                         "metadata": [{"i": i} for i in range(start, start + 50)]})
        assert r.status_code == 200, r.text
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    response = store_client.post("/search", json={"collection": "vec", "vectors": queries.tolist(), "k": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["hits"] is None and len(body["results"]) == 5
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(q @ unit.T), axis=1)[:, :7]
    for row, hits in enumerate(body["results"]):
        assert [h["id"] for h in hits] == [f"v{i}" for i in expected[row]]
        assert [h["metadata"]["i"] for h in hits] == list(expected[row])
    info = store_client.get("/collections/vec").json()
    assert info["count"] == 300 and info["dim"] == 16 and info["memory_bytes"] > 0

def test_store_and_search_real_photos_through_the_model(store_client, photos):
    assert store_client.put("/collections/photos", json={"model": "fake"}).json()["space_id"].startswith("fake-")
    names = list(photos)
    r = store_client.post("/collections/photos/points", json={
        "ids": names, "inputs": [{"image": b64(photos[n])} for n in names], "metadata": [{"name": n} for n in names]})
    assert r.json() == {"upserted": 4, "count": 4, "status": "completed"}
    for name in names:
        hits = store_client.post("/search", json={"collection": "photos", "input": {"image": b64(photos[name])}, "k": 2}).json()["hits"]
        assert hits[0]["id"] == name and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    by_id = store_client.post("/search", json={"collection": "photos", "id": "coffee", "k": 10}).json()["hits"]
    assert "coffee" not in [h["id"] for h in by_id] and len(by_id) == 3
    assert store_client.request("DELETE", "/collections/photos/points", json={"ids": ["coffee", "ghost"]}).json() == {"deleted": 1, "count": 3}
    assert_error(store_client.get("/collections/photos/points/coffee"), 404, "point_not_found")
    point = store_client.get("/collections/photos/points/rocket").json()
    assert point["metadata"] == {"name": "rocket"} and len(point["vector"]) == DIM

def test_vectors_from_another_space_are_refused(store_client):
    store_client.put("/collections/spaced", json={"model": "fake"})
    v = [[0.1] * DIM]
    assert_error(store_client.post("/collections/spaced/points", json={"ids": ["a"], "vectors": v, "space_id": "other-1"}), 409,
                 "space_mismatch")
    assert_error(store_client.post("/search", json={"collection": "spaced", "vector": v[0], "space_id": "other-1"}), 409)
    assert store_client.get("/collections/spaced").json()["count"] == 0
