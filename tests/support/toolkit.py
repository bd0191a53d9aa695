"""Small helpers every test folder uses: a free port, base64, the error-shape assert, a captured JSON log."""

from __future__ import annotations

import base64
import io
import logging
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from loadtests.server import free_port  # the one copy, shared with the load-test launcher
from tests.support.record import record

__all__ = ["assert_error", "b64", "captured_log", "cosine", "free_port", "stop"]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM a server process and wait for it; SIGKILL if it is not gone in 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is the one error shape with this status (and code); returns the error object."""
    record("hostile input", route=f"{response.request.method} {response.request.url.path}", status=response.status_code,
           expected=status)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message", "detail"} <= set(body["error"])
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


@contextmanager
def captured_log(name: str, formatter: logging.Formatter | None = None) -> Iterator[io.StringIO]:
    """Everything logger `name` writes at INFO and above, formatted (e.g. by the service's JsonFormatter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    if formatter is not None:
        handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def batch_totals(client, model: str, component: str = "predictor") -> tuple[float, float]:
    """(engine calls, items) of one model component's batcher so far, from /metrics."""
    text = client.get("/metrics").text
    labels = rf'\{{component="{component}",model="{model}"\}}'
    count = re.search(rf"jepa_batch_size_count{labels} ([0-9.e+]+)", text)
    total = re.search(rf"jepa_batch_size_sum{labels} ([0-9.e+]+)", text)
    return (float(count.group(1)), float(total.group(1))) if count and total else (0.0, 0.0)
