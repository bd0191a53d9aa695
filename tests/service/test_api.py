"""The HTTP surface in process (TestClient runs the real lifespan on the exported demo model)."""

import base64
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from models.demo import load_demo_model
from tests.conftest import serving
from tests.support.record import record


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def preprocessed(png: bytes) -> torch.Tensor:
    """resize (bilinear) -> [0,1] -> mean/std, as (3, 64, 64)."""
    model = load_demo_model()
    image = Image.open(io.BytesIO(png)).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(model.mean).view(3, 1, 1)) / torch.tensor(model.std).view(3, 1, 1)


def torch_reference(*pngs: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The shipped PyTorch demo model on the same frames; one image is repeated into the 2-frame clip."""
    frames = [preprocessed(p) for p in pngs]
    clip = torch.stack(frames if len(frames) == 2 else [frames[0], frames[0]])  # (2, 3, 64, 64)
    with torch.inference_mode():
        pooled, tokens = load_demo_model().encoder(clip[None])
    return pooled[0].numpy(), tokens[0].numpy()


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def assert_error(response, status: int, code: str | None = None) -> dict:
    record("hostile input", route=f"{response.request.method} {response.request.url.path}", status=response.status_code,
           expected=status)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "detail"} <= set(body["error"])
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# -- /embed ------------------------------------------------------------------------------


def test_embed_matches_pytorch_for_real_photos(client, photos):
    response = client.post("/embed", json={"inputs": [{"image": b64(p)} for p in photos.values()], "normalize": False,
                                           "output": "tokens"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "demo" and body["dim"] == 128 and body["space_id"].startswith("demo-")
    for i, png in enumerate(photos.values()):
        ref_pooled, ref_tokens = torch_reference(png)
        assert cosine(body["embeddings"][i], ref_pooled) >= 0.9999
        assert np.asarray(body["tokens"][i]).shape == (64, 64)
        assert cosine(np.ravel(body["tokens"][i]), ref_tokens.ravel()) >= 0.9999


def test_embed_multipart_equals_json_and_normalises(client, photos):
    png = photos["chelsea"]
    form = client.post("/embed", files=[("files", ("cat.png", png, "image/png"))])
    as_json = client.post("/embed", json={"inputs": [{"image": b64(png)}]})
    assert form.status_code == as_json.status_code == 200
    a, b = np.asarray(form.json()["embeddings"][0]), np.asarray(as_json.json()["embeddings"][0])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert form.json()["tokens"] is None


def test_multipart_without_files_is_refused_as_the_schema_says(client):
    """The documented multipart schema requires at least one file (minItems 1), and the route agrees."""
    schema = client.get("/openapi.json").json()["paths"]["/embed"]["post"]["requestBody"]["content"]
    files = schema["multipart/form-data"]["schema"]["properties"]["files"]
    assert "files" in schema["multipart/form-data"]["schema"]["required"] and files["minItems"] == 1
    response = client.post("/embed", data={"model": "demo"}, files=[("other", ("a.txt", b"x", "text/plain"))])
    assert_error(response, 422, "validation_error")
    assert "at least one file" in response.json()["error"]["message"]


def test_embed_tensor_fast_path_equals_image_path(client, photos):
    png = photos["rocket"]
    tensor = preprocessed(png).numpy()
    by_tensor = client.post("/embed", json={"inputs": [{"tensor": {"data": b64(tensor.tobytes()), "shape": [3, 64, 64]}}]})
    by_image = client.post("/embed", json={"inputs": [{"image": b64(png)}]})
    assert cosine(by_tensor.json()["embeddings"][0], by_image.json()["embeddings"][0]) > 0.99999


def test_embed_two_frame_clip_and_one_image_follow_the_clip_rule(client, photos):
    """The manifest says 2 frames per clip: a 'frames' input is one clip; one image is repeated to fill it."""
    a, b = photos["coffee"], photos["rocket"]
    clip = client.post("/embed", json={"inputs": [{"frames": [b64(a), b64(b)]}, {"frames": [b64(b)]}, {"image": b64(b)}],
                                       "normalize": False})
    assert clip.status_code == 200, clip.text
    got = clip.json()["embeddings"]
    assert cosine(got[0], torch_reference(a, b)[0]) >= 0.9999
    assert cosine(got[1], torch_reference(b)[0]) >= 0.9999
    np.testing.assert_allclose(got[1], got[2], atol=1e-5)
    assert cosine(got[0], got[2]) < 0.9999  # the older frame matters
    stacked = np.stack([preprocessed(a).numpy(), preprocessed(b).numpy()])
    by_tensor = client.post("/embed", json={"inputs": [{"tensor": {"data": b64(stacked.tobytes()), "shape": [2, 3, 64, 64]}}],
                                            "normalize": False})
    assert cosine(by_tensor.json()["embeddings"][0], got[0]) > 0.99999
    assert_error(client.post("/embed", json={"inputs": [{"frames": [b64(a)] * 3}]}), 422, "invalid_clip")


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"inputs": [{"image": b64(b"not an image")}]}, 400, "invalid_image"),
        ({"inputs": [{"frames": []}]}, 422, "validation_error"),
        ({"inputs": [{"image": "%%%"}]}, 400, "invalid_base64"),
        ({"inputs": []}, 422, "validation_error"),
        ({"inputs": [{}]}, 422, "validation_error"),
        ({"inputs": [{"image": "aGk=", "tensor": {"data": "", "shape": [1]}}]}, 422, "validation_error"),
        ({"inputs": [{"image": "aGk="}], "model": "nope"}, 404, "model_not_found"),
        ({"inputs": [{"image": "aGk="}], "output": "everything"}, 422, "validation_error"),
        ({"inputs": [{"image": "aGk="}], "surprise": 1}, 422, "validation_error"),
    ],
)
def test_embed_bad_input_is_a_clear_4xx(client, payload, status, code):
    assert_error(client.post("/embed", json=payload), status, code)


def test_embed_wrong_content_type_is_415(client):
    assert_error(client.post("/embed", content=b"hello", headers={"content-type": "text/plain"}), 415)


def test_embed_invalid_json_is_400(client):
    assert_error(client.post("/embed", content=b"{nope", headers={"content-type": "application/json"}), 400, "invalid_json")


def test_embed_too_many_inputs_is_413(settings_factory, photos):
    with serving(settings_factory(max_request_items=2)) as small:
        body = {"inputs": [{"image": b64(photos["coffee"])}] * 3}
        assert_error(small.post("/embed", json=body), 413, "too_many_items")


def test_body_over_the_limit_is_413(settings_factory):
    with serving(settings_factory(max_body_bytes=1000)) as small:
        assert_error(small.post("/embed", json={"inputs": [{"image": "A" * 2000}]}), 413, "payload_too_large")


# -- collections and /search --------------------------------------------------------------


def test_search_agrees_with_numpy_brute_force(client):
    rng = np.random.default_rng(5)
    stored = rng.standard_normal((300, 16)).astype(np.float32)
    assert client.put("/collections/vec", json={"dim": 16, "metric": "cosine"}).status_code == 201
    for start in range(0, 300, 50):
        ids = [f"v{i}" for i in range(start, start + 50)]
        r = client.post("/collections/vec/points", json={"ids": ids, "vectors": stored[start:start + 50].tolist(),
                                                         "metadata": [{"i": i} for i in range(start, start + 50)]})
        assert r.status_code == 200, r.text
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    response = client.post("/search", json={"collection": "vec", "vectors": queries.tolist(), "k": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["hits"] is None and len(body["results"]) == 5
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(q @ unit.T), axis=1)[:, :7]
    for row, hits in enumerate(body["results"]):
        assert [h["id"] for h in hits] == [f"v{i}" for i in expected[row]]
        assert [h["metadata"]["i"] for h in hits] == list(expected[row])
    info = client.get("/collections/vec").json()
    assert info["count"] == 300 and info["dim"] == 16 and info["memory_bytes"] > 0


def test_store_and_search_real_photos_through_the_model(client, photos):
    assert client.put("/collections/photos", json={"model": "demo"}).json()["space_id"].startswith("demo-")
    names = list(photos)
    r = client.post("/collections/photos/points", json={
        "ids": names, "inputs": [{"image": b64(photos[n])} for n in names], "metadata": [{"name": n} for n in names]})
    assert r.json() == {"upserted": 4, "count": 4, "status": "completed"}
    for name in names:
        hits = client.post("/search", json={"collection": "photos", "input": {"image": b64(photos[name])}, "k": 2}).json()["hits"]
        assert hits[0]["id"] == name and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    by_id = client.post("/search", json={"collection": "photos", "id": "coffee", "k": 10}).json()["hits"]
    assert "coffee" not in [h["id"] for h in by_id] and len(by_id) == 3
    assert client.request("DELETE", "/collections/photos/points", json={"ids": ["coffee", "ghost"]}).json() == {"deleted": 1, "count": 3}
    assert_error(client.get("/collections/photos/points/coffee"), 404, "point_not_found")
    point = client.get("/collections/photos/points/rocket").json()
    assert point["metadata"] == {"name": "rocket"} and len(point["vector"]) == 128


def test_vectors_from_another_space_are_refused(client):
    client.put("/collections/spaced", json={"model": "demo"})
    v = [[0.1] * 128]
    assert_error(client.post("/collections/spaced/points", json={"ids": ["a"], "vectors": v, "space_id": "other-1"}), 409,
                 "space_mismatch")
    assert_error(client.post("/search", json={"collection": "spaced", "vector": v[0], "space_id": "other-1"}), 409)
    assert client.get("/collections/spaced").json()["count"] == 0


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
        ("put", "/collections/x", {"model": "demo", "dim": 5}, 422),
        ("put", "/collections/x", {"dim": 4, "metric": "hamming"}, 422),
    ],
)
def test_collection_bad_input_is_a_clear_4xx_and_stores_nothing(client, method, path, payload, status):
    client.put("/collections/c", json={"dim": 3})
    client.post("/collections/c/points", json={"ids": ["keep"], "vectors": [[1.0, 0.0, 0.0]]})
    assert_error(getattr(client, method)(path, json=payload) if method != "get" else client.get(path), status)
    assert client.get("/collections/c").json()["count"] == 1


def test_nan_in_vectors_is_422(client):
    client.put("/collections/n", json={"dim": 2})
    body = '{"ids": ["a"], "vectors": [[NaN, 1.0]]}'
    assert_error(client.post("/collections/n/points", content=body, headers={"content-type": "application/json"}), 422)
    assert client.get("/collections/n").json()["count"] == 0


def test_collection_lifecycle_and_persistence(settings_factory):
    settings = settings_factory()
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


# -- /predict_future ------------------------------------------------------------------------


def test_predict_future_matches_a_pytorch_rollout(client, photos):
    actions = [[0.5, 0.0], [0.0, -0.25], [1.0, 1.0]]
    response = client.post("/predict_future", json={"context": [{"image": b64(photos["astronaut"])}], "actions": actions})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["states"]) == 3 and all(len(s) == 128 for s in body["states"])
    model = load_demo_model()
    state = torch.from_numpy(torch_reference(photos["astronaut"])[0])[None]
    with torch.inference_mode():
        for step, action in enumerate(actions):
            state = model.predictor(state, torch.tensor([action]))
            assert cosine(body["states"][step], state[0].numpy()) >= 0.9999
    two = client.post("/predict_future", json={"context": [{"image": b64(photos["coffee"])}, {"image": b64(photos["astronaut"])}],
                                               "actions": actions[:1]}).json()
    assert cosine(two["initial_state"], torch_reference(photos["coffee"], photos["astronaut"])[0]) >= 0.9999
    from_state = client.post("/predict_future", json={"state": body["initial_state"], "actions": actions}).json()
    np.testing.assert_allclose(from_state["states"], body["states"], atol=1e-5)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"state": [0.0] * 128, "actions": [[0.1, 0.1, 0.1]]}, 422),
        ({"state": [0.0] * 128, "actions": [[5.0, 0.0]]}, 422),
        ({"state": [0.0] * 127, "actions": [[0.1, 0.1]]}, 422),
        ({"state": [0.0] * 128, "actions": []}, 422),
        ({"state": [0.0] * 128, "actions": [[0.1, 0.1], [0.1]]}, 422),
        ({"actions": [[0.1, 0.1]]}, 422),
        ({"context": [], "actions": [[0.1, 0.1]]}, 422),
        ({"context": [{"image": "aGk="}] * 3, "actions": [[0.1, 0.1]]}, 422),
        ({"state": [0.0] * 128, "actions": [[0.0, 0.0]] * 1000}, 413),
        ({"model": "nope", "state": [0.0] * 128, "actions": [[0.0, 0.0]]}, 404),
    ],
)
def test_predict_bad_input_is_a_clear_4xx(client, payload, status):
    assert_error(client.post("/predict_future", json=payload), status)


# -- operations ------------------------------------------------------------------------------


def test_health_readiness_models_and_metrics(client, photos):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == {"demo": "ready"}
    models = client.get("/models").json()["models"]
    assert models[0]["name"] == "demo" and models[0]["components"]["encoder"]["precision"] == "fp32"
    assert models[0]["components"]["encoder"]["device"] == "CPUExecutionProvider"
    client.post("/embed", json={"inputs": [{"image": b64(photos["coffee"])}]})
    text = client.get("/metrics").text
    assert 'jepa_requests_total{method="POST",route="/embed",status="200"} 1.0' in text
    assert 'jepa_batch_size_count{component="encoder",model="demo"}' in text
    assert 'jepa_model_parity_min_cosine{component="encoder",model="demo",precision="fp32"}' in text
    assert client.get("/docs").status_code == 200
    assert "/embed" in client.get("/openapi.json").json()["paths"]


def test_unknown_route_uses_the_error_shape(client):
    assert_error(client.get("/nope"), 404)
    assert_error(client.delete("/embed"), 405)
    assert client.request("OPTIONS", "/collections/c").headers["allow"] == "DELETE, GET, PUT"


def test_not_ready_without_models(tmp_path):
    from service.settings import Settings

    with serving(Settings(model_repository=tmp_path / "empty", data_dir=tmp_path / "d")) as bare:
        assert bare.get("/healthz").status_code == 200
        assert bare.get("/readyz").status_code == 503
        assert_error(bare.post("/embed", json={"inputs": [{"image": "aGk="}]}), 503, "not_ready")


def test_a_broken_model_entry_does_not_stop_the_others(demo_repository, tmp_path):
    import shutil

    from service.settings import Settings

    repo = tmp_path / "repo"
    shutil.copytree(demo_repository / "demo", repo / "demo")
    shutil.copytree(demo_repository / "demo", repo / "broken")
    (repo / "broken" / "encoder.onnx").write_bytes(b"garbage")
    (repo / "nomanifest").mkdir()
    manifest = json.loads((repo / "demo" / "manifest.json").read_text())
    with serving(Settings(model_repository=repo, data_dir=tmp_path / "d", precision="fp32")) as c:
        ready = c.get("/readyz").json()
        assert ready["models"]["demo"] == "ready"
        assert ready["models"]["broken"].startswith("failed")
        assert ready["models"]["nomanifest"].startswith("failed")
        assert c.post("/predict_future", json={"model": "demo", "state": [0.0] * 128, "actions": [[0, 0]]}).status_code == 200
        assert manifest["name"] == "demo"


# -- deadlines and readiness ------------------------------------------------------------------


def test_deadline_header_and_field(client, photos):
    body = {"inputs": [{"image": b64(photos["coffee"])}]}
    assert client.post("/embed", json=body, headers={"X-Request-Timeout-Ms": "10000"}).status_code == 200
    assert_error(client.post("/embed", json=body, headers={"X-Request-Timeout-Ms": "soon"}), 400, "invalid_timeout")
    assert_error(client.post("/embed", json={**body, "timeout_ms": -5}), 422)
    # a deadline that cannot be met: the item is dropped and the answer is 504, not a late 200
    # (token output is never served from the embedding cache, so this one must run the encoder)
    slow = client.post("/embed", json={**body, "output": "tokens", "timeout_ms": 0.001})
    assert_error(slow, 504, "deadline_exceeded")
    text = client.get("/metrics").text
    assert 'jepa_rejected_total{component="encoder",model="demo",reason="expired"}' in text


def test_readyz_reports_the_phase_and_warmed_sizes(client):
    ready = client.get("/readyz").json()
    assert ready["phase"] == "ready" and ready["status"] == "ready"
    text = client.get("/metrics").text
    # warm-up runs the engine directly (not through the batcher), so no batch was counted yet
    assert 'jepa_batch_size_count{component="encoder",model="demo"}' not in text


def test_serving_waits_while_warming(settings_factory, monkeypatch):
    import threading

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.model_pool import ModelPool

    release = threading.Event()
    original = ModelPool.warm_up

    def slow_warm_up(self):
        release.wait(10)
        original(self)

    monkeypatch.setattr(ModelPool, "warm_up", slow_warm_up)
    with TestClient(create_app(settings_factory())) as c:
        for _ in range(200):
            if c.get("/readyz").json()["phase"] == "warming":
                break
            time.sleep(0.01)
        warming = c.get("/readyz")
        assert warming.status_code == 503 and warming.json()["phase"] == "warming"
        assert c.get("/healthz").status_code == 200
        assert_error(c.post("/embed", json={"inputs": [{"image": "aGk="}]}), 503, "not_ready")
        release.set()
        for _ in range(500):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.01)
        assert c.get("/readyz").json()["phase"] == "ready"


def test_binary_encodings_carry_the_same_numbers(client, photos):
    body = {"inputs": [{"image": b64(photos["chelsea"])}, {"image": b64(photos["rocket"])}], "output": "tokens"}
    floats = client.post("/embed", json=body).json()
    pooled = np.asarray(floats["embeddings"], np.float32)
    tokens = np.asarray(floats["tokens"], np.float32)

    packed = client.post("/embed", json={**body, "encoding": "base64"}).json()
    assert packed["embeddings"]["shape"] == list(pooled.shape) and packed["tokens"]["shape"] == list(tokens.shape)
    assert pooled.shape[0] == tokens.shape[0] == 2 and tokens.ndim == 3
    decoded = np.frombuffer(base64.b64decode(packed["embeddings"]["data"]), "<f4").reshape(2, 128)
    np.testing.assert_array_equal(decoded, pooled)

    half = client.post("/embed", json={**body, "encoding": "base64", "dtype": "float16"}).json()
    assert half["tokens"]["dtype"] == "float16"
    tokens16 = np.frombuffer(base64.b64decode(half["tokens"]["data"]), "<f2").reshape(tokens.shape)
    np.testing.assert_allclose(tokens16, tokens, atol=2e-3, rtol=2e-3)

    npy = client.post("/embed", json=body, headers={"Accept": "application/x-npy"})
    assert npy.headers["content-type"] == "application/x-npy" and npy.headers["x-model"] == "demo"
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), tokens)
    form = client.post("/embed", files=[("files", ("a.png", photos["chelsea"], "image/png"))],
                       data={"encoding": "base64"}, headers={"Accept": "application/x-npy"})
    np.testing.assert_allclose(np.load(io.BytesIO(form.content))[0], pooled[0], atol=1e-6)


def test_a_bad_item_in_a_batch_stores_nothing(client, photos):
    client.put("/collections/atomic", json={"model": "demo"})
    good = b64(photos["coffee"])
    truncated = b64(photos["rocket"][: len(photos["rocket"]) // 3])
    r = client.post("/collections/atomic/points", json={"ids": ["a", "b", "c"],
                                                        "inputs": [{"image": good}, {"image": good}, {"image": truncated}]})
    assert_error(r, 400, "invalid_image")
    vectors = json.dumps([[0.1] * 128, [0.1] * 127 + [float("nan")]])  # json.dumps writes NaN
    mixed = client.post("/collections/atomic/points", content=f'{{"ids": ["a", "b"], "vectors": {vectors}}}',
                        headers={"content-type": "application/json"})
    assert_error(mixed, 422, "invalid_vector")
    assert client.get("/collections/atomic").json()["count"] == 0


@pytest.mark.parametrize("name", ["../demo", "demo/../../etc", "%2e%2e", "demo\x00"])
def test_model_names_are_lookups_not_paths(client, name):
    r = client.post("/embed", json={"model": name, "inputs": [{"image": "aGk="}]})
    assert_error(r, 404, "model_not_found")


def test_oversized_metadata_is_413_and_stores_nothing(client):
    client.put("/collections/meta", json={"dim": 2})
    huge = {"blob": "x" * 20_000}
    r = client.post("/collections/meta/points", json={"ids": ["a", "b"], "vectors": [[1, 0], [0, 1]], "metadata": [{}, huge]})
    assert_error(r, 413, "metadata_too_large")
    assert r.json()["error"]["detail"]["point"] == 1
    assert client.get("/collections/meta").json()["count"] == 0
