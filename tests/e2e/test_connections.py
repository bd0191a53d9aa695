"""Stalled connections against a real server: closed after the read timeouts, and capped in number.

An outside test held 200 connections that sent part of their headers, or headers without their body,
open indefinitely (219 descriptors after 40 s). Here each kind is opened against `jepa-serve` with short
timeouts, and every socket is watched (select, bounded) until the server closes it.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.error
import urllib.request

import httpx
import pytest

from tests.support.record import record
from tests.support.servers import open_fds, running_server

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
PER_KIND = 10
MAX_BODY = 1024 * 1024
DISCARD = 8 * 1024 * 1024
MAX_CONNECTIONS = 3 * PER_KIND + 2  # the stalled ones, and room for the test's own requests

STALLS = {
    "silent": b"",
    "partial headers": b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appli",
    "headers without body": b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 5000\r\n\r\n{\"inputs\": [",
}


def open_stalled(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if payload:
        sock.sendall(payload)
    return sock


def wait_closed(socks: dict[socket.socket, str], bound_s: float, since: float | None = None,
                ) -> dict[socket.socket, tuple[float, bytes]]:
    """Read every socket until the server closes it (EOF or reset) or bound_s passes:
    {sock: (seconds from `since` (default: now), bytes received)}."""
    started = time.monotonic() if since is None else since
    received = {sock: b"" for sock in socks}
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    while len(closed) < len(socks) and time.monotonic() - started < bound_s:
        waiting = [s for s in socks if s not in closed]
        readable, _, _ = select.select(waiting, [], [], 0.2)
        for sock in readable:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            received[sock] += chunk
            if not chunk:
                closed[sock] = (time.monotonic() - started, received[sock])
    return closed


@pytest.fixture(scope="module")
def server(demo_repository, tmp_path_factory):
    with running_server(demo_repository, tmp_path_factory.mktemp("connections"), header_timeout_s=str(HEADER_TIMEOUT_S),
                        body_timeout_s=str(BODY_TIMEOUT_S), max_connections=str(MAX_CONNECTIONS),
                        max_body_bytes=str(MAX_BODY), discard_body_bytes=str(DISCARD)) as running:
        yield running


def test_stalled_connections_are_closed_after_the_timeouts_and_capped(server):
    port = int(server.url.rsplit(":", 1)[1])
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    baseline = open_fds(server.pid)

    opened_at = time.monotonic()
    socks = {open_stalled(port, payload): kind for kind, payload in STALLS.items() for _ in range(PER_KIND)}
    # a request while they stall is served (the cap leaves room), on a fresh connection
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    # past the cap: answered 503 and closed at once, not held
    extra = [open_stalled(port, b"") for _ in range(MAX_CONNECTIONS - len(socks) + 1)]
    refused = wait_closed({s: "extra" for s in extra}, bound_s=5)
    over_cap = [data for _, data in refused.values() if data.startswith(b"HTTP/1.1 503")]
    assert over_cap, refused
    assert b"too_many_connections" in over_cap[0], refused

    closed = wait_closed(socks, bound_s=HEADER_TIMEOUT_S + BODY_TIMEOUT_S + 15, since=opened_at)
    elapsed = time.monotonic() - opened_at
    # the extras the cap still had room for were accepted and stall silently: they close on the header timeout,
    # after the first ones, and the server's descriptors are counted once every connection it held is closed
    accepted = {s: "extra" for s in extra if s not in refused}
    wait_closed(accepted, bound_s=HEADER_TIMEOUT_S + 15)
    after = open_fds(server.pid)
    for sock in list(socks) + extra:
        sock.close()

    still_open = [kind for sock, kind in socks.items() if sock not in closed]
    assert not still_open, f"{len(still_open)} stalled connections still open after {elapsed:.1f} s: {still_open[:5]}"
    by_kind = {kind: [closed[s] for s, k in socks.items() if k == kind] for kind in STALLS}
    for kind, results in by_kind.items():
        earliest = min(seconds for seconds, _ in results)
        assert earliest >= min(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) * 0.8, (kind, earliest)  # the timer, not a reset
    assert all(data.startswith(b"HTTP/1.1 408") for _, data in by_kind["partial headers"]), by_kind["partial headers"]
    assert all(data == b"" for _, data in by_kind["silent"])
    assert after <= baseline + 2, (baseline, after)
    slowest = max(seconds for seconds, _ in closed.values())
    record("stalled connections (silent, partial headers, headers without body) on a directly exposed server",
           stalled=len(socks), closed=len(closed), slowest_close_s=round(slowest, 2),
           header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S,
           answered_408=sum(d.startswith(b"HTTP/1.1 408") for _, d in closed.values()),
           over_the_cap_refused_503=len(over_cap), server_descriptors_before=baseline, after=after)


def post_with_urllib(url: str, size: int) -> tuple[int | str, bytes]:
    """urllib sends `Connection: close` and the whole body before it reads a byte of the answer."""
    request = urllib.request.Request(f"{url}/embed", data=b"x" * size, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError) as exc:
        return type(getattr(exc, "reason", exc)).__name__, b""


def test_a_client_that_sends_its_whole_oversized_body_first_reads_the_413(server):
    status, body = post_with_urllib(server.url, 6 * MAX_BODY)  # answered 413 at the headers; the rest is drained
    assert status == 413, (status, body[:200])
    assert json.loads(body)["error"]["code"] == "payload_too_large", (status, body[:200])
    # draining is bounded: past discard_body_bytes the connection is closed under the sender
    status, _ = post_with_urllib(server.url, 4 * DISCARD)
    assert status in ("ConnectionResetError", "BrokenPipeError"), status
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    record("oversized body sent whole before reading (urllib), a closing client",
           body_mb=6 * MAX_BODY // 2**20, limit_mb=MAX_BODY // 2**20, answer=413,
           beyond_the_discard_bound="connection closed")
