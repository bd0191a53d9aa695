"""POST /embed at the HTTP edge: input forms, encodings, limits, deadlines and errors (torch-free fake model)."""


import base64
import io

import numpy as np
import pytest

from tests.conftest import serving
from tests.support.fake_repository import DIM
from tests.support.toolkit import assert_error, b64


@pytest.fixture
def model_repository(fake_repository):
    """The torch-free fake model: these tests are about the HTTP edge, not what a real model computes."""
    return fake_repository


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
    assert 'jepa_rejected_total{component="encoder",model="fake",reason="expired"}' in text

def test_binary_encodings_carry_the_same_numbers(client, photos):
    body = {"inputs": [{"image": b64(photos["chelsea"])}, {"image": b64(photos["rocket"])}], "output": "tokens"}
    floats = client.post("/embed", json=body).json()
    pooled = np.asarray(floats["embeddings"], np.float32)
    tokens = np.asarray(floats["tokens"], np.float32)

    packed = client.post("/embed", json={**body, "encoding": "base64"}).json()
    assert packed["embeddings"]["shape"] == list(pooled.shape) and packed["tokens"]["shape"] == list(tokens.shape)
    assert pooled.shape[0] == tokens.shape[0] == 2 and tokens.ndim == 3
    decoded = np.frombuffer(base64.b64decode(packed["embeddings"]["data"]), "<f4").reshape(2, DIM)
    np.testing.assert_array_equal(decoded, pooled)

    half = client.post("/embed", json={**body, "encoding": "base64", "dtype": "float16"}).json()
    assert half["tokens"]["dtype"] == "float16"
    tokens16 = np.frombuffer(base64.b64decode(half["tokens"]["data"]), "<f2").reshape(tokens.shape)
    np.testing.assert_allclose(tokens16, tokens, atol=2e-3, rtol=2e-3)

    npy = client.post("/embed", json=body, headers={"Accept": "application/x-npy"})
    assert npy.headers["content-type"] == "application/x-npy" and npy.headers["x-model"] == "fake"
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), tokens)
    form = client.post("/embed", files=[("files", ("a.png", photos["chelsea"], "image/png"))],
                       data={"encoding": "base64"}, headers={"Accept": "application/x-npy"})
    np.testing.assert_allclose(np.load(io.BytesIO(form.content))[0], pooled[0], atol=1e-6)

@pytest.mark.parametrize("name", ["../demo", "demo/../../etc", "%2e%2e", "demo\x00"])
def test_model_names_are_lookups_not_paths(client, name):
    r = client.post("/embed", json={"model": name, "inputs": [{"image": "aGk="}]})
    assert_error(r, 404, "model_not_found")
