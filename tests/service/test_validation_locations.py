"""One style of field location in validation errors on every route: ["body", field, ...] for a body (parsed by
FastAPI or by the route itself, as /embed does for JSON and multipart), ["query", ...] and ["path", ...] for
parameters."""

from __future__ import annotations

import pytest

SOURCES = ("body", "query", "path", "header")


@pytest.fixture
def model_repository(fake_repository):
    return fake_repository


def locations(answer) -> list[list[str]]:
    assert answer.status_code == 422, answer.text
    body = answer.json()["error"]
    assert body["code"] == "validation_error"
    return [e["loc"] for e in body["detail"]["errors"]]


@pytest.mark.parametrize(("method", "path", "request_kwargs", "expected"), [
    ("POST", "/embed", {"json": {"inputs": [{"image": 5}]}}, ["body", "inputs", "0", "image"]),
    ("POST", "/embed", {"json": {"inputs": [], "normalize": "maybe"}}, ["body", "inputs"]),
    ("POST", "/embed", {"files": {"files": ("a.png", b"x", "image/png")}, "data": {"num_frames": "many"}},
     ["body", "num_frames"]),
    ("POST", "/search", {"json": {"collection": "c", "vector": [1.0], "k": "ten"}}, ["body", "k"]),
    ("POST", "/classify", {"json": {"inputs": "not a list"}}, ["body", "inputs"]),
    ("PUT", "/collections/bad name!", {"json": {"dim": 4}}, ["path", "name"]),
])
def test_every_route_locates_fields_alike(client, method, path, request_kwargs, expected):
    found = locations(client.request(method, path, **request_kwargs))
    assert all(loc[0] in SOURCES for loc in found), found
    assert expected in found, found


def test_the_bad_item_of_a_batch_is_still_named(client):
    answer = client.post("/embed", json={"inputs": [{"image": "aGk="}, {"image": 5}]})
    assert answer.json()["error"]["detail"]["index"] == 1
