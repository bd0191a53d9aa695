"""A client that hangs up mid-body (a stopped load test, a timeout) is not a server error.

Found by the load test: Locust stops its users mid-request, and `/embed` used to
log a traceback and count a 500 for each of them.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def model_repository(fake_repository):
    """The torch-free fake model: these tests are about the HTTP edge, not what a real model computes."""
    return fake_repository


def asgi_post(client, path: str, content_type: bytes, first_chunk: bytes) -> list[dict]:
    """Run one POST through the app whose client sends part of the body and then disconnects."""
    messages = iter([{"type": "http.request", "body": first_chunk, "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"content-type", content_type), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }
    client.portal.call(client.app, scope, receive, send)
    return sent


@pytest.mark.parametrize(("content_type", "first_chunk"), [
    (b"application/json", b'{"inputs": [{"image": "iVBOR'),
    (b"multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n\x89PNG'),
])
def test_disconnect_mid_body_is_499_without_traceback(client, content_type: bytes, first_chunk: bytes,
                                                      caplog: pytest.LogCaptureFixture):
    sent = asgi_post(client, "/embed", content_type, first_chunk)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.exc_info], "a disconnect must not log a traceback"
    metrics = client.get("/metrics").text
    assert 'route="/embed",status="499"' in metrics
    assert 'route="/embed",status="500"' not in metrics
