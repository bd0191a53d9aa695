"""The OpenAPI document and the docs pages: offline assets, Bearer scheme with keys, clean operations."""

from __future__ import annotations

import hashlib

from tests.conftest import serving


def test_docs_pages_load_their_assets_from_this_server(client):
    for page, asset in (("/docs", "/docs/assets/swagger-ui-bundle.js"), ("/redoc", "/docs/assets/redoc.standalone.js")):
        html = client.get(page).text
        assert asset in html and "cdn" not in html.lower() and "fonts.googleapis" not in html
        script = client.get(asset)
        assert script.status_code == 200 and len(script.content) > 500_000
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200


def test_operations_are_named_described_and_list_only_their_own_errors(client):
    document = client.get("/openapi.json").json()
    operations = {op["operationId"]: op for item in document["paths"].values() for op in item.values()}
    assert len(operations) == 18
    for name, op in operations.items():
        assert "__" not in name and name.isidentifier()
        assert len(op["description"]) > 30, name
    # 429: the concurrency limit (JEPA_MAX_CONCURRENT_REQUESTS) answers it on every route but health and metrics
    assert set(operations["list_collections"]["responses"]) == {"200", "429", "503"}
    assert set(operations["readyz"]["responses"]) == set(operations["healthz"]["responses"]) == {"200", "503"}
    assert "507" in operations["upsert_points"]["responses"] and "507" not in operations["search"]["responses"]
    for name in ("embed", "search", "predict_future", "plan", "surprise", "classify"):
        headers = [p for p in operations[name].get("parameters", []) if p["in"] == "header"]
        assert [p["name"] for p in headers] == ["x-request-timeout-ms"] and headers[0]["description"], name
    assert "securitySchemes" not in document.get("components", {})  # no keys configured: nothing to authorize


def test_with_keys_the_document_has_a_bearer_scheme_and_open_health(settings_factory):
    digest = hashlib.sha256(b"secret-key").hexdigest()
    with serving(settings_factory(api_keys=f"ci:{digest}:read,write")) as client:
        assert client.get("/docs").status_code == 200  # the docs need no key
        assert client.get("/docs/assets/swagger-ui.css").status_code == 200
        document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["bearer"]["description"]}
    embed = document["paths"]["/embed"]["post"]
    assert embed["security"] == [{"bearer": []}] and {"401", "403"} <= set(embed["responses"])
    readyz = document["paths"]["/readyz"]["get"]
    assert readyz["security"] == [] and "401" not in readyz["responses"]
