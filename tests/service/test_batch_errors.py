"""Batch errors name the offending item (detail.index); precomputed-vector upserts are bounded by count and
bytes (base64 arrays accepted), media upserts by items."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.conftest import serving


def b64_array(array: np.ndarray) -> dict:
    raw = np.ascontiguousarray(array, dtype="<f4")
    return {"data": base64.b64encode(raw.tobytes()).decode(), "dtype": "float32", "shape": list(raw.shape)}


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_embed_names_the_input_that_failed(client, photos):
    good = base64.b64encode(photos["coffee"]).decode()
    inputs = [{"image": good}] * 3 + [{"image": base64.b64encode(b"not an image").decode()}]
    assert error(client.post("/embed", json={"inputs": inputs}), 400)["detail"]["index"] == 3
    inputs = [{"image": good}, {"image": "%%%"}]
    assert error(client.post("/embed", json={"inputs": inputs}), 400)["detail"] == {"index": 1}
    inputs = [{"image": good}, {"image": good}, {"image": good, "video": good}]
    assert error(client.post("/embed", json={"inputs": inputs}), 422)["detail"]["index"] == 2


def test_upserts_and_search_batches_name_the_row(client):
    assert client.put("/collections/rows", json={"dim": 3}).status_code == 201
    vectors = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1]]
    body = {"ids": ["a", "b", "c", "d"], "vectors": vectors}
    assert error(client.post("/collections/rows/points", json=body), 422)["detail"]["index"] == 3
    nan = np.eye(3, dtype=np.float32)
    nan[1, 1] = np.nan
    body = {"ids": ["a", "b", "c"], "vectors": b64_array(nan)}
    assert error(client.post("/collections/rows/points", json=body), 422)["detail"]["index"] == 1
    body = {"ids": ["a", "b"], "vectors": [[1, 0, 0], [0, 1, 0]], "metadata": [{}, {"x": "y" * 20_000}]}
    assert error(client.post("/collections/rows/points", json=body), 413)["detail"]["index"] == 1
    zero = {"collection": "rows", "vectors": [[1, 0, 0], [0, 0, 0]]}
    assert error(client.post("/search", json=zero), 422)["detail"]["index"] == 1
    ragged = {"collection": "rows", "vectors": [[1, 0, 0], [0, 1, 0], [0, 1]]}
    assert error(client.post("/search", json=ragged), 422)["detail"]["index"] == 2
    assert client.get("/collections/rows").json()["count"] == 0  # nothing stored half-way


def test_vector_upserts_are_bounded_by_count_and_bytes_not_by_media_items(settings_factory, photos):
    settings = settings_factory(max_request_items=2, max_upsert_vectors=500, max_upsert_bytes=64 * 1024)
    with serving(settings) as client:
        assert client.get("/limits").json()["max_upsert_vectors"] == 500
        assert client.put("/collections/bulk", json={"dim": 32}).status_code == 201
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((500, 32)).astype(np.float32)
        ids = [f"v{i}" for i in range(500)]
        done = client.post("/collections/bulk/points", json={"ids": ids, "vectors": b64_array(vectors)})
        assert done.status_code == 200 and done.json()["count"] == 500
        hits = client.post("/search", json={"collection": "bulk", "vectors": b64_array(vectors[7:9]), "k": 1}).json()
        assert [r[0]["id"] for r in hits["results"]] == ["v7", "v8"]
        more = {"ids": ids + ["x"], "vectors": b64_array(np.vstack([vectors, vectors[:1]]))}
        assert error(client.post("/collections/bulk/points", json=more), 413)["detail"] == {"max_upsert_vectors": 500}
        assert client.put("/collections/wide", json={"dim": 128}).status_code == 201
        wide = {"ids": ids[:200], "vectors": b64_array(rng.standard_normal((200, 128)))}  # 102,400 bytes > 64 KiB
        assert error(client.post("/collections/wide/points", json=wide), 413)["detail"]["max_upsert_bytes"] == 65536
        assert client.put("/collections/media", json={"model": "demo"}).status_code == 201
        image = base64.b64encode(photos["coffee"]).decode()
        three = {"ids": ["a", "b", "c"], "inputs": [{"image": image}] * 3}
        assert error(client.post("/collections/media/points", json=three), 413)["code"] == "too_many_items"


@pytest.mark.parametrize("bad", [{"data": "%%%", "dtype": "float32", "shape": [1, 32]},
                                 {"data": "AAAA", "dtype": "float32", "shape": [1, 32]}])
def test_a_malformed_vector_array_is_a_4xx(client, bad):
    assert client.put("/collections/arr", json={"dim": 32}).status_code == 201
    answer = client.post("/collections/arr/points", json={"ids": ["a"], "vectors": bad})
    assert answer.status_code in (400, 422), answer.text
