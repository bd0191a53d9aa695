"""The client's retry policy on 429/503, on a scripted transport (the waits are recorded, not slept)."""

from __future__ import annotations

import httpx
import pytest
from jepa_serve_client import Client, RetryPolicy, errors


def scripted(*answers: tuple[int, dict, dict]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body, headers = queue.pop(0)
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handle), seen


def overloaded(code: str = "overloaded", retry_after: str | None = "3") -> tuple[int, dict, dict]:
    status = 503 if code in ("not_ready", "storage_unavailable") else 429
    return (
        status,
        {"error": {"code": code, "message": "busy", "detail": {}}},
        {"retry-after": retry_after} if retry_after else {},
    )


def test_429_and_503_are_retried_after_retry_after_then_succeed():
    transport, seen = scripted(overloaded(), overloaded("not_ready", None), (200, {"models": []}, {}))
    waits: list[float] = []
    with Client("http://jepa", transport=transport, sleep=waits.append, retry=RetryPolicy(backoff_s=0.25)) as client:
        assert client.models() == {"models": []}
    assert waits == [3.0, 0.5]  # the server's Retry-After, then backoff 0.25 x 2^1
    assert len(seen) == 3


def test_retries_stop_at_the_cap_with_the_servers_error():
    transport, seen = scripted(*[overloaded("rate_limited", "100")] * 3)
    waits: list[float] = []
    policy = RetryPolicy(max_retries=2, max_backoff_s=5)
    with Client("http://jepa", transport=transport, sleep=waits.append, retry=policy) as client, \
            pytest.raises(errors.RateLimited) as caught:
        client.models()
    assert waits == [5.0, 5.0]
    assert len(seen) == 3
    assert caught.value.status == 429
    assert caught.value.message == "busy"
    assert caught.value.retry_after == 100


def test_other_errors_are_not_retried_and_unknown_codes_fall_back_to_their_status():
    transport, seen = scripted((404, {"error": {"code": "brand_new_code", "message": "m", "detail": {"x": 1}}}, {}))
    with Client("http://jepa", transport=transport, sleep=lambda s: None) as client, \
            pytest.raises(errors.NotFound) as caught:
        client.get_collection("c")
    assert len(seen) == 1
    assert caught.value.code == "brand_new_code"
    assert caught.value.detail == {"x": 1}


def test_every_error_code_of_the_service_has_a_client_type_of_the_same_status():
    from service.errors import ErrorCode

    for code in ErrorCode:
        cls = errors.BY_CODE.get(code.value)
        assert cls is not None, f"clients/python lacks an exception type for {code.value!r}"
        assert cls.status == code.status, f"{cls.__name__} is a {cls.status}; {code.value!r} is a {code.status}"
    assert set(errors.BY_CODE) == {code.value for code in ErrorCode}, "the client knows codes the server never sends"


def test_the_client_imports_without_the_server_torch_or_onnxruntime():
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    client_dir = Path(__file__).resolve().parents[3] / "clients" / "python"
    declared = tomllib.loads((client_dir / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(d.split(">")[0] for d in declared) == ["httpx", "numpy"]
    probe = ("import sys, jepa_serve_client; heavy = {'torch', 'fastapi', 'service', 'onnxruntime', 'PIL', 'faiss'}; "
             "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=client_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_surprise_sends_arrays_as_lists_proprio_included():
    import json

    import numpy as np

    transport, seen = scripted((200, {"scores": []}, {}))
    with Client("http://jepa", transport=transport) as client:
        client.surprise(states=np.zeros((2, 3)), actions=np.ones((1, 7)), proprio=np.full((2, 7), 0.5), model="ac")
    body = json.loads(seen[0].content)
    assert body == {"model": "ac", "states": [[0.0] * 3] * 2, "actions": [[1.0] * 7], "proprio": [[0.5] * 7] * 2}
