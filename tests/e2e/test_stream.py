"""/stream/surprise on a real server process (uvicorn + its WebSocket stack), driven by the `websockets` client
and, where a library would not misbehave enough, by a bare socket (tests/support/raw_websocket.py)."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import connect

from models.demo import world
from tests.support import raw_websocket as raw
from tests.support.record import record
from tests.support.servers import running_server

pytestmark = pytest.mark.e2e


def png(frame) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_real_client_sees_the_score_jump_at_the_teleport_and_a_bad_frame_closes_with_1007(server: str):
    pair = world.generate_violations(12, 1, "ball_teleport", steps=10, onset_range=(6, 7))
    frames, actions, onset = pair.violated.frames()[0], pair.violated.actions[0], int(pair.onset[0])
    url = server.replace("http://", "ws://") + "/stream/surprise"
    with connect(url) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        scores = []
        for t, frame in enumerate(frames):
            if t:
                ws.send(json.dumps({"action": actions[t - 1].tolist()}))
            ws.send(png(frame))
            scores.append(json.loads(ws.recv()))
        assert [s["step"] for s in scores if s["surprising"]][0] == onset
        ws.send(b"not an image")
        assert json.loads(ws.recv())["error"]["code"] == "invalid_image"
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 1007


STALL_S = 4.0  # JEPA_STREAM_IDLE_TIMEOUT_S of the server below: idle and not reading alike


@pytest.fixture(scope="module")
def two_slots(demo_repository, tmp_path_factory):
    """A server with two stream slots and a short idle timeout."""
    with running_server(demo_repository, tmp_path_factory.mktemp("stream-slots"), stream_max_connections="2",
                        stream_idle_timeout_s=str(STALL_S)) as running:
        yield running


def frame_message() -> bytes:
    pair = world.generate_violations(3, 1, "ball_teleport", steps=2, onset_range=(1, 2))
    text = json.dumps({"frame": base64.b64encode(png(pair.violated.frames()[0][0])).decode(), "action": [0.1, 0.0]})
    return raw.frame(raw.TEXT, text.encode())


def test_clients_that_never_read_are_dropped_and_free_their_slots(two_slots):
    """Issue 23 item 6: two clients that send frames and never read held both slots forever (ping and idle
    timeouts closed nothing) and every new client got 1013. Now each is dropped once its socket has been full
    for the idle timeout, and a new client is served."""
    port = int(two_slots.url.rsplit(":", 1)[1])
    url = two_slots.url.replace("http://", "ws://") + "/stream/surprise"
    message = frame_message()
    stalled = [raw.open_websocket(port, "/stream/surprise", small_buffers=True) for _ in range(2)]
    try:
        sent = [raw.send_until_blocked(sock, message, blocked_s=0.5, bound_s=120) for sock in stalled]
        held_at = time.monotonic()
        with connect(url) as third:  # both slots are held now
            assert json.loads(third.recv())["error"]["code"] == "overloaded"
            with pytest.raises(ConnectionClosedError) as closed:
                third.recv()
            assert closed.value.rcvd.code == 1013
        dropped = [raw.dropped_within(sock, 60) for sock in stalled]
        assert all(seconds is not None for seconds in dropped), dropped
        with connect(url) as fresh:  # a slot is free again
            assert json.loads(fresh.recv())["type"] == "ready"
        freed_after = time.monotonic() - held_at
    finally:
        for sock in stalled:
            sock.close()
    record("WebSocket clients that send frames and never read, 2 stream slots", clients=len(stalled),
           frames_sent_before_the_server_stopped_reading=sent, dropped=len(dropped),
           slot_free_again_after_s=round(freed_after, 1), idle_timeout_s=STALL_S)


def test_a_silent_client_is_closed_with_1001_and_the_reason(two_slots):
    url = two_slots.url.replace("http://", "ws://") + "/stream/surprise"
    with connect(url) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        error = json.loads(ws.recv(timeout=STALL_S + 10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert error["type"] == "error"
    assert "no message" in error["error"]["message"]
    assert closed.value.rcvd.code == 1001
    assert "no message" in closed.value.rcvd.reason


@pytest.mark.parametrize("threshold", ["abc", "nan", "1e400", "-inf"])
def test_a_threshold_that_is_not_a_finite_number_is_refused_in_words(server: str, threshold):
    """Issue 23 item 9: `abc` got an HTTP 403 with an empty body; `nan` and `1e400` were accepted and the ready
    message carried NaN / Infinity (not JSON). Now: accepted, an error message, then 1008 with the reason."""
    url = server.replace("http://", "ws://") + f"/stream/surprise?threshold={threshold}"
    with connect(url) as ws:
        text = ws.recv()
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv()
    error = json.loads(text)  # strict JSON: no NaN, no Infinity
    assert error["type"] == "error"
    assert error["error"]["code"] == "validation_error"
    assert "threshold" in error["error"]["message"]
    assert closed.value.rcvd.code == 1008
    assert "threshold" in closed.value.rcvd.reason
    record("/stream/surprise with a threshold that is not a finite number", case=threshold,
           refused="error message + close 1008")


def test_a_50_mb_message_gets_the_apps_refusal_with_the_limit(server: str):
    """Issue 23 item 9: uvicorn closed a 50 MB message at its own 16 MiB limit, without the error message the app
    sends above its limit (4 MiB). The WebSocket limit is now the app's, and the refusal is the app's."""
    url = server.replace("http://", "ws://") + "/stream/surprise"
    limit = 4 * 1024 * 1024  # JEPA_STREAM_MAX_MESSAGE_BYTES's default
    with connect(url, close_timeout=10) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(b"\0" * (50 * 1024 * 1024))
        error = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=30)
    assert error["error"]["code"] == "payload_too_large", error
    assert error["error"]["detail"] == {"stream_max_message_bytes": limit}
    assert closed.value.rcvd.code == 1009
    assert str(limit) in closed.value.rcvd.reason
    record("/stream/surprise: one 50 MB message", case="50 MB binary", refused="error message + close 1009")
