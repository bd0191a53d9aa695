"""Every request example in the OpenAPI document is sent to a real server and accepted (2xx), so what
Swagger UI's "Try it out" and ReDoc show works as shown."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e

# Writes before the reads that need them, deletes last.
ORDER = ["create_collection", "upsert_points", "embed", "search", "classify", "predict_future", "plan", "surprise",
         "delete_points"]


def test_every_documented_example_is_accepted(server: str):
    document = httpx.get(f"{server}/openapi.json").json()
    operations = {op["operationId"]: (path, method, op)
                  for path, item in document["paths"].items() for method, op in item.items()}
    with_examples = {name for name, (_, _, op) in operations.items()
                     if op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("examples")}
    assert with_examples == set(ORDER), "an operation with a body has no example, or the test misses one"
    assert set(operations["embed"][2]["requestBody"]["content"]["application/json"]["examples"]) == {
        "image", "frames", "video", "tensor"}
    sent = 0
    for name in ORDER:
        path, method, op = operations[name]
        for parameter in op.get("parameters", []):
            if parameter["in"] == "path":
                path = path.replace("{" + parameter["name"] + "}", parameter["example"])
        for example_name, example in op["requestBody"]["content"]["application/json"]["examples"].items():
            answer = httpx.request(method.upper(), f"{server}{path}", json=example["value"], timeout=60)
            assert 200 <= answer.status_code < 300, (name, example_name, answer.text[:500])
            sent += 1
    assert sent >= 14
