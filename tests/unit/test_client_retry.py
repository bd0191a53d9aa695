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
    return status, {"error": {"code": code, "message": "busy", "detail": {}}}, {"retry-after": retry_after} if retry_after else {}


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
    with Client("http://jepa", transport=transport, sleep=waits.append, retry=policy) as client:
        with pytest.raises(errors.RateLimited) as caught:
            client.models()
    assert waits == [5.0, 5.0] and len(seen) == 3  # Retry-After capped at max_backoff_s, then given up
    assert caught.value.status == 429 and caught.value.message == "busy" and caught.value.retry_after == 100


def test_other_errors_are_not_retried_and_unknown_codes_fall_back_to_their_status():
    transport, seen = scripted((404, {"error": {"code": "brand_new_code", "message": "m", "detail": {"x": 1}}}, {}))
    with Client("http://jepa", transport=transport, sleep=lambda s: None) as client:
        with pytest.raises(errors.NotFound) as caught:
            client.get_collection("c")
    assert len(seen) == 1 and caught.value.code == "brand_new_code" and caught.value.detail == {"x": 1}


def test_every_error_code_the_service_raises_has_its_own_client_type():
    import re
    from pathlib import Path

    from service.api.errors import HTTP_CODES

    root = Path(__file__).resolve().parents[2] / "service"
    raised = {m for f in root.rglob("*.py") for m in re.findall(r'\bcode\s*=\s*"([a-z_]+)"', f.read_text())}
    raised |= set(HTTP_CODES.values()) - {"http_error"}
    missing = sorted(code for code in raised if code not in errors.BY_CODE)
    assert not missing, f"client/python lacks exception types for {missing}"


def test_the_client_imports_without_the_server_torch_or_onnxruntime():
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    client_dir = Path(__file__).resolve().parents[2] / "clients" / "python"
    declared = tomllib.loads((client_dir / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(d.split(">")[0] for d in declared) == ["httpx", "numpy"]
    probe = ("import sys, jepa_serve_client; heavy = {'torch', 'fastapi', 'service', 'onnxruntime', 'PIL', 'faiss'}; "
             "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=client_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
