"""WebSocket /stream/surprise driven by a real WebSocket client (Starlette's TestClient): a demo trajectory with a
teleport, the close codes of bad input, and the bounded per-connection buffer."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from starlette.websockets import WebSocketDisconnect

from models.demo import world
from service.api.stream import Frame, Refusal, read_messages
from service.settings import Settings
from tests.conftest import png_bytes, serving
from tests.support.toolkit import b64


def teleport_trajectory():
    pair = world.generate_violations(11, 1, "ball_teleport", steps=12, onset_range=(7, 8))
    return pair.violated.frames()[0], pair.violated.actions[0], int(pair.onset[0])


def stream(ws, frames: np.ndarray, actions: np.ndarray) -> list[dict]:
    """Half the frames as binary messages (action first), half as JSON with the frame in base64."""
    replies = []
    for t, frame in enumerate(frames):
        action = None if t == 0 else actions[t - 1].tolist()
        if t % 2:
            ws.send_text(json.dumps({"frame": b64(png_bytes(frame)), "action": action}))
        else:
            if action is not None:
                ws.send_text(json.dumps({"action": action}))
            ws.send_bytes(png_bytes(frame))
        replies.append(ws.receive_json())
    return replies


def test_the_score_jumps_at_the_teleport_and_equals_post_surprise(client):
    frames, actions, onset = teleport_trajectory()
    with client.websocket_connect("/stream/surprise?model=demo") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "ready"
        assert hello["frames_per_clip"] == 2
        assert hello["action_dim"] == 2
        replies = stream(ws, frames, actions)
    assert [r["step"] for r in replies] == list(range(len(frames)))
    assert replies[0]["score"] is None
    assert replies[1]["score"] is None
    scores = {r["step"]: r["score"] for r in replies if r["score"] is not None}
    # the jump: the first surprising frame is the teleport, far above every frame before it (the frame after it
    # scores high too: its state is predicted from the clip that saw the jump)
    assert [r["step"] for r in replies if r["surprising"]][0] == onset
    assert scores[onset] > 3 * max(abs(scores[s]) for s in scores if s < onset)
    assert scores[onset] > hello["threshold"]
    http = client.post("/surprise", json={"observations": [{"image": b64(png_bytes(f))} for f in frames],
                                          "actions": actions.tolist()}).json()
    np.testing.assert_allclose([scores[s] for s in http["steps"]], http["scores"], rtol=1e-4, atol=1e-4)


def closed(ws) -> tuple[dict, int]:
    """The error message the server sends before it closes, and the close code."""
    message = ws.receive_json()
    with pytest.raises(WebSocketDisconnect) as closing:
        ws.receive_json()
    return message, closing.value.code


FRAME = world.render(np.array([[20.0, 20.0]]), np.array([[40.0, 40.0]]))[0]


@pytest.mark.parametrize(
    ("messages", "code", "error"),
    [
        (["not json"], 1007, "invalid_json"),
        ([{"frame": "aGk="}], 1007, "invalid_image"),
        ([{"frame": "***"}], 1007, "invalid_base64"),
        ([{"picture": "x"}], 1007, "invalid_input"),
        ([{"action": "left"}], 1007, "invalid_action"),
        ([FRAME, FRAME, FRAME], 1007, "invalid_action"),  # the third frame is scored: its action is missing
        ([FRAME, FRAME, {"action": [0.1, 0.2, 0.3]}, FRAME], 1007, "invalid_action"),
        ([FRAME, FRAME, {"action": [9.0, 0.0]}, FRAME], 1007, "invalid_action"),
        ([b"x" * 5000], 1009, "payload_too_large"),
        ([{"frame": b64(png_bytes(FRAME)), "proprio": [0.0] * 7}], 1007, "invalid_proprio"),  # V-JEPA 2-AC only
    ],
)
def test_bad_input_closes_with_a_clear_code(settings_factory, messages, code, error):
    with serving(settings_factory(stream_max_message_bytes=4096)) as client, client.websocket_connect(
        "/stream/surprise"
    ) as ws:
        assert ws.receive_json()["type"] == "ready"
        for message in messages:
            if isinstance(message, np.ndarray):
                ws.send_bytes(png_bytes(message))
            elif isinstance(message, bytes):
                ws.send_bytes(message)
            else:
                ws.send_text(message if isinstance(message, str) else json.dumps(message))
        replies = []
        while (reply := ws.receive_json())["type"] == "score":
            replies.append(reply)
        with pytest.raises(WebSocketDisconnect) as closing:
            ws.receive_json()
    assert reply["error"]["code"] == error, reply
    assert closing.value.code == code


def test_limits_and_unknown_models_close_with_policy(settings_factory):
    with serving(settings_factory(stream_max_steps=2)) as client:
        with client.websocket_connect("/stream/surprise?model=nope") as ws:
            message, code = closed(ws)
            assert (message["error"]["code"], code) == ("model_not_found", 1008)
        with client.websocket_connect("/stream/surprise") as ws:
            ws.receive_json()
            for _ in range(3):
                ws.send_bytes(png_bytes(FRAME))
            assert [ws.receive_json()["step"] for _ in range(2)] == [0, 1]
            message, code = closed(ws)
            assert code == 1008
            assert "stream_max_steps" in message["error"]["message"]


def test_a_full_buffer_stops_reading_the_socket():
    """Backpressure: with nobody scoring, the reader takes `buffer` frames plus the one it waits to put, then
    reads nothing more; a frame taken out lets it read exactly one more."""

    async def scenario() -> None:
        reads = 0

        async def receive() -> dict:
            nonlocal reads
            reads += 1
            return {"type": "websocket.receive", "bytes": b"frame"}

        inbox: asyncio.Queue = asyncio.Queue(maxsize=2)
        reader = asyncio.create_task(read_messages(receive, inbox, Settings().config.stream))
        for _ in range(1000):  # bounded: let the reader run until it blocks
            if inbox.full() and reads == 3:
                break
            await asyncio.sleep(0)
        for _ in range(100):
            await asyncio.sleep(0)
        assert (inbox.qsize(), reads) == (2, 3)
        assert isinstance(inbox.get_nowait(), Frame)
        for _ in range(1000):
            if reads == 4:
                break
            await asyncio.sleep(0)
        for _ in range(100):
            await asyncio.sleep(0)
        assert (inbox.qsize(), reads) == (2, 4)
        reader.cancel()

    asyncio.run(scenario())


def test_an_idle_stream_is_closed_as_going_away():
    async def scenario() -> object:
        never = asyncio.Event()

        async def receive() -> dict:
            await never.wait()
            return {}

        inbox: asyncio.Queue = asyncio.Queue(maxsize=2)
        await read_messages(receive, inbox, Settings(stream_idle_timeout_s=0.05).config.stream)
        return inbox.get_nowait()

    refusal = asyncio.run(scenario())
    assert isinstance(refusal, Refusal)
    assert refusal.code == 1001


def test_streams_past_the_connection_limit_are_told_to_try_later(settings_factory):
    with serving(settings_factory(stream_max_connections=1)) as client:
        with client.websocket_connect("/stream/surprise") as first:
            assert first.receive_json()["type"] == "ready"
            assert 'jepa_open_streams 1.0' in client.get("/metrics").text
            with client.websocket_connect("/stream/surprise") as second:
                message, code = closed(second)
            assert (message["error"]["code"], code) == ("overloaded", 1013)
        with client.websocket_connect("/stream/surprise") as again:  # the slot is free once the first closed
            assert again.receive_json()["type"] == "ready"
