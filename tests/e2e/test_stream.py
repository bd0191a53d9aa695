"""/stream/surprise on a real server process (uvicorn + its WebSocket stack), driven by the `websockets` client."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from models.demo import world

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
