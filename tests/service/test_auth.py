"""Auth, scopes, rate limits and request ids on the real app (TestClient runs the real lifespan).

The route list comes from the app itself (its OpenAPI paths), so a route added
later is checked too: every non-public route must refuse a request without a
key (401) and with a key of the wrong scope (403).
"""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.logs import JsonFormatter
from service.security import hash_key, new_key
from tests.conftest import serving
from tests.support.toolkit import captured_log


@pytest.fixture
def model_repository(fake_repository):
    """The torch-free fake model: these tests are about the HTTP edge, not what a real model computes."""
    return fake_repository

KEYS = {name: new_key() for name in ("reader", "writer", "operator", "admin")}
SCOPES = {"reader": "read", "writer": "write", "operator": "ops", "admin": "read,write,ops"}
ENTRIES = ";".join(f"{n}:{hash_key(k)}:{SCOPES[n]}" for n, k in KEYS.items())
READ_ONLY_POSTS = {"/embed", "/search", "/predict_future", "/plan", "/surprise", "/classify"}
OPS_PATHS = {"/healthz", "/readyz", "/metrics"}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def expected_scope(method: str, path: str, ops_open: bool) -> str | None:
    """The rule of the issue, written here independently of service/security/policy.py."""
    if path in OPS_PATHS:
        return None if ops_open else "ops"
    return "read" if method == "GET" or path in READ_ONLY_POSTS else "write"


def app_routes(client: TestClient) -> list[tuple[str, str]]:
    paths = client.app.openapi()["paths"]
    routes = []
    for template, operations in paths.items():
        path = template.replace("{name}", "authcoll").replace("{point_id}", "p1")
        assert "{" not in path, f"fill the path parameter of {template} in this test"
        routes += [(method.upper(), path) for method in operations]
    return routes


def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None):
    return client.request(method, path, headers=headers or {}, json={} if method in ("POST", "PUT", "DELETE") else None)


def wrong_key_for(scope: str) -> str:
    return {"read": "writer", "write": "reader", "ops": "reader"}[scope]


def right_key_for(scope: str) -> str:
    return {"read": "reader", "write": "writer", "ops": "operator"}[scope]


@pytest.fixture
def secured(settings_factory):
    def make(**overrides):
        return serving(settings_factory(api_keys=ENTRIES, **overrides))
    return make


@pytest.mark.parametrize("ops_open", [True, False])
def test_every_route_refuses_missing_key_and_wrong_scope(secured, ops_open):
    with secured(health_open=ops_open, metrics_open=ops_open) as client:
        routes = app_routes(client)
        # The routes this test must at least see (a broken enumeration must not pass vacuously).
        assert {("POST", "/embed"), ("POST", "/search"), ("PUT", "/collections/authcoll"), ("GET", "/metrics"),
                ("POST", "/collections/authcoll/points"), ("DELETE", "/collections/authcoll/points")} <= set(routes)
        checked = 0
        for method, path in routes:
            scope = expected_scope(method, path, ops_open)
            if scope is None:
                assert call(client, method, path).status_code not in (401, 403), (method, path)
                continue
            anonymous = call(client, method, path)
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.json()["error"]["code"] == "unauthorized"
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            assert call(client, method, path, {"Authorization": "Bearer jepa_not-a-key"}).status_code == 401
            assert call(client, method, path, {"Authorization": f"Basic {KEYS['admin']}"}).status_code == 401
            wrong = call(client, method, path, bearer(wrong_key_for(scope)))
            assert wrong.status_code == 403, (method, path, wrong.text)
            assert wrong.json()["error"]["detail"]["required_scope"] == scope
            right = call(client, method, path, bearer(right_key_for(scope)))
            assert right.status_code not in (401, 403), (method, path, right.text)
            checked += 1
        assert checked >= 10


def test_right_key_works_end_to_end_and_metrics_count_refusals(secured, photos):
    import base64

    image = base64.b64encode(photos["chelsea"]).decode()
    with secured() as client:
        assert client.post("/embed", json={"inputs": [{"image": image}]}).status_code == 401
        assert client.put("/collections/pets", json={"model": "fake"}, headers=bearer("reader")).status_code == 403
        assert client.put("/collections/pets", json={"model": "fake"}, headers=bearer("writer")).status_code == 201
        stored = client.post("/collections/pets/points", headers=bearer("writer"),
                             json={"ids": ["cat"], "inputs": [{"image": image}]})
        assert stored.status_code == 200, stored.text
        hits = client.post("/search", headers=bearer("reader"), json={"collection": "pets", "input": {"image": image}})
        assert hits.status_code == 200
        assert hits.json()["hits"][0]["id"] == "cat"
        assert client.post("/embed", headers=bearer("reader"), json={"inputs": [{"image": image}]}).status_code == 200
        metrics = client.get("/metrics").text
        assert 'jepa_auth_denied_total{reason="missing"} 1.0' in metrics
        assert 'jepa_auth_denied_total{reason="scope"} 1.0' in metrics


def test_body_over_the_limit_is_413_for_an_authorised_key(secured):
    with secured(max_body_bytes=1000) as client:
        big = {"collection": "c", "vector": [0.5] * 1000}
        response = client.post("/search", json=big, headers=bearer("reader"))
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        # without a key the body is never read: 401 comes first
        assert client.post("/search", json=big).status_code == 401


def test_no_keys_configured_means_auth_off(client):
    assert client.get("/collections").status_code == 200
    assert client.get("/models").status_code == 200


def test_plain_key_in_config_is_refused_at_startup(settings_factory):
    with pytest.raises(ValueError, match="sha256"):
        create_app(settings_factory(api_keys=f"ci:{KEYS['reader']}:read").config)
    with pytest.raises(ValueError, match="scopes"):
        create_app(settings_factory(api_keys=f"ci:{hash_key('x')}:admin").config)


def test_an_empty_keys_file_refuses_to_start_instead_of_opening_every_route(settings_factory, tmp_path):
    empty = tmp_path / "keys"
    empty.write_text("# no keys yet\n")
    with pytest.raises(ValueError, match="holds no API key"):
        create_app(settings_factory(api_keys_file=empty).config)
    with pytest.raises(ValueError, match="cannot read"):
        create_app(settings_factory(api_keys_file=tmp_path / "missing").config)
    good = tmp_path / "good"
    good.write_text(f"reader:{hash_key(KEYS['reader'])}:read\n")
    with serving(settings_factory(api_keys_file=good)) as client:
        assert client.get("/collections").status_code == 401
        assert client.get("/collections", headers=bearer("reader")).status_code == 200


def test_rate_limit_per_key_answers_429_with_retry_after(secured):
    with secured(rate_limit_requests=3, rate_limit_window_s=3600) as client:  # long window: no boundary inside the test
        codes = [client.get("/collections", headers=bearer("reader")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/collections", headers=bearer("reader"))
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 3600
        # another key has its own budget; open health routes are not counted
        assert client.get("/collections", headers=bearer("admin")).status_code == 200
        assert all(client.get("/healthz").status_code == 200 for _ in range(5))
        assert 'jepa_rate_limited_total{key="reader"} 2.0' in client.get("/metrics").text


def test_request_id_is_echoed_or_made_and_the_access_log_is_one_json_line(secured):
    with captured_log("jepa.access", JsonFormatter()) as stream, secured() as client:
        given = client.get("/collections", headers={"X-Request-ID": "trace-42", **bearer("reader")})
        made = client.get("/collections/nope", headers=bearer("reader"))
        hostile = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert given.headers["x-request-id"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_id = {line["request_id"]: line for line in lines}
    first = by_id["trace-42"]
    assert first["method"] == "GET"
    assert first["route"] == "/collections"
    assert first["status"] == 200
    assert first["key"] == "reader"
    assert first["duration_ms"] >= 0
    second = by_id[made.headers["x-request-id"]]
    assert second["route"] == "/collections/{name}"
    assert second["status"] == 404
    text = stream.getvalue()
    assert not any(key in text or hash_key(key) in text for key in KEYS.values()), "a key or its hash was logged"


def test_the_surprise_stream_needs_a_read_key(secured):
    """WebSocket routes are not in the OpenAPI paths above: the handshake is checked like a GET."""
    from starlette.websockets import WebSocketDisconnect

    with secured() as client:
        for headers in ({}, {"Authorization": "Bearer jepa_not-a-key"}, bearer("writer"), bearer("operator")):
            with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(
                "/stream/surprise", headers=headers
            ):
                pass
            assert refused.value.code == 1008
            assert refused.value.reason.split(":")[0] in ("unauthorized", "forbidden")
        with client.websocket_connect("/stream/surprise", headers=bearer("reader")) as ws:
            # past auth: the fake model has no predictor, so the stream itself refuses, for that reason
            message = ws.receive_json()
            assert message["error"]["code"] == "no_surprise"
