"""POST /surprise on V-JEPA 2-AC (the tiny checkpoint of tests/jepa_checkpoints.py, exported with a surprise
calibration on normal .npz trajectories): frame t + 1 is scored by the mean L1 between the predictor's prediction
from the observed frames up to t (their poses and the actions between them) and the observed frame's layer-normed
tokens, z-scored by the manifest. The reference runs the exported encoder and predictor graphs by hand with ONNX
Runtime, one window per step, independently of the service's batched windows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import png_bytes, serving
from tests.support.ac_export import HISTORY, ACExport, scene, trajectory
from tests.support.toolkit import assert_error, b64, batch_totals

P, D = 16, 64  # tokens per frame ((32 / 8)^2) and width of the tiny encoder


@pytest.fixture(scope="module")
def ac_repository(ac_export: ACExport) -> Path:
    return ac_export.repository


@pytest.fixture(scope="module")
def client(ac_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    from service.settings import Settings

    # batch_tune off: a batch limit tuned at warm-up (it varies with machine load) could split a request's items
    settings = Settings(model_repository=ac_repository, data_dir=tmp_path_factory.mktemp("data"), default_model="ac",
                        max_queue_delay_ms=1.0, predictor_max_batch_size=64, batch_tune=False)
    with serving(settings) as test_client:
        yield test_client


def layer_norm(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)


def by_hand(entry: Path, frames: np.ndarray, poses: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame encoded alone as a 2-frame clip of itself; step t: the predictor on the window of frames
    max(0, t - W + 1)..t (zeros after them), its block of frame t layer-normed, against frame t + 1's tokens."""
    manifest = json.loads((entry / "manifest.json").read_text())
    window = manifest["predictor"]["context_frames"]
    assert manifest["input"]["dtype"] == "uint8"  # the encoder takes pixels and normalises them itself
    x = frames.transpose(0, 3, 1, 2)  # (T, 3, 32, 32)
    clips = np.ascontiguousarray(np.repeat(x[:, :, None], 2, axis=2))  # (T, 3, 2, 32, 32)
    (tokens,) = ort.InferenceSession(str(entry / "encoder.onnx")).run(["tokens"], {"pixel_values": clips})
    tokens = layer_norm(tokens[:, -P:])  # (T, P, D)
    predictor = ort.InferenceSession(str(entry / "predictor.onnx"))
    distances = []
    for t in range(len(actions)):
        start = max(0, t - window + 1)
        w = t + 1 - start
        context = np.zeros((1, window * P, D), np.float32)
        context[0, :w * P] = tokens[start:t + 1].reshape(-1, D)
        acts, states = np.zeros((1, window, 7), np.float32), np.zeros((1, window, 7), np.float32)
        acts[0, :w], states[0, :w] = actions[start:t + 1], poses[start:t + 1]
        (predicted,) = predictor.run(["predicted"], {"context": context, "actions": acts, "states": states})
        distances.append(np.abs(layer_norm(predicted[0, (w - 1) * P:w * P]) - tokens[t + 1]).mean())
    distance = np.asarray(distances)
    spec = manifest["surprise"]
    return distance, (distance - spec["mean"]) / spec["std"]


def request(frames: np.ndarray, poses: np.ndarray, actions: np.ndarray, **extra) -> dict:
    return {"observations": [{"image": b64(png_bytes(f))} for f in frames], "proprio": poses.tolist(),
            "actions": actions.tolist(), **extra}


def test_scores_equal_the_onnx_graphs_run_by_hand(client, ac_repository):
    frames, poses, actions = trajectory("rocket", 7)  # 6 steps: the window of 2 slides from step 2 on
    response = client.post("/surprise", json=request(frames, poses, actions))
    assert response.status_code == 200, response.text
    body = response.json()
    distance, scores = by_hand(ac_repository / "ac", frames, poses, actions)
    assert body["steps"] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(body["distances"], distance, rtol=1e-4)
    np.testing.assert_allclose(body["scores"], scores, rtol=1e-4, atol=1e-4)
    assert body["surprising"] == [s for s, z in zip(body["steps"], scores, strict=True) if z > body["threshold"]]
    assert body["calibration"]["metric"] == "l1_tokens"
    assert body["threshold"] == 3.0
    # the threshold is the caller's to move
    low = client.post("/surprise", json=request(frames, poses, actions, threshold=float(np.median(scores)))).json()
    assert low["surprising"] == [s for s, z in zip(body["steps"], scores, strict=True) if z > np.median(scores)]


def test_an_unrelated_frame_changes_only_the_steps_that_see_it(client, ac_repository):
    """Teacher forcing with a sliding window: frame k swapped for another scene changes the score of step k (it is
    observed there) and of steps k + 1..k + W (it is in their context), and no other (a free rollout would carry it
    to every later step). With the random weights of the test model a swapped frame need not score higher, so the
    changed scores are checked against the graphs run by hand instead."""
    frames, poses, actions = trajectory("rocket", 8)
    swapped = frames.copy()
    swapped[4] = scene("astronaut", 1, start=30)[0]
    normal = client.post("/surprise", json=request(frames, poses, actions)).json()["distances"]
    response = client.post("/surprise", json=request(swapped, poses, actions))
    assert response.status_code == 200, response.text
    changed = response.json()["distances"]
    np.testing.assert_allclose(changed, by_hand(ac_repository / "ac", swapped, poses, actions)[0], rtol=1e-4)
    steps = range(1, 8)
    differs = [s for s, a, b in zip(steps, normal, changed, strict=True) if abs(a - b) > 1e-4 * abs(a)]
    assert differs == [4, 5, 6]  # k = 4, W = 2


def test_the_calibration_is_the_same_distance_on_the_normal_trajectories(ac_export):
    """The manifest's mean and std are those of the served distance (computed by hand) over the normal files."""
    entry = ac_export.repository / "ac"
    raw = np.concatenate([by_hand(entry, *(np.load(path)[k] for k in ("frames", "poses", "actions")))[0]
                          for path in sorted(ac_export.normal.glob("*.npz"))])
    spec = json.loads((entry / "manifest.json").read_text())["surprise"]
    assert raw.size == 21  # 5 + 5 + 11 steps (the export predicts 8 windows per call: the last file takes two)
    assert spec["mean"] == pytest.approx(raw.mean(), rel=1e-4)
    assert spec["std"] == pytest.approx(raw.std(), rel=1e-3)
    assert "21 steps of 3 trajectories" in spec["calibration"]


def test_a_video_is_sampled_and_each_frame_scored(client, ac_repository):
    from tests.video_files import write_video

    frames, poses, actions = trajectory("rocket", 5)
    video = write_video(list(frames))
    with av.open(io.BytesIO(video)) as container:  # what the service decodes (the codec is near-lossless, not exact)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    body = {"observations": [{"video": b64(video)}], "proprio": poses.tolist(), "actions": actions.tolist(),
            "num_frames": 5, "stride": 1}
    response = client.post("/surprise", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["steps"] == [1, 2, 3, 4]
    np.testing.assert_allclose(response.json()["distances"], by_hand(ac_repository / "ac", decoded, poses, actions)[0],
                               rtol=1e-4)
    del body["num_frames"]  # 16 frames by default: no longer one pose per frame
    assert_error(client.post("/surprise", json=body), 422, "invalid_proprio")



def test_one_window_predicts_the_first_steps_and_a_request_is_one_batch(client):
    frames, poses, actions = trajectory("rocket", 7)
    calls, items = batch_totals(client, "ac")
    assert client.post("/surprise", json=request(frames, poses, actions)).status_code == 200
    after_calls, after_items = batch_totals(client, "ac")
    # 6 steps: the first window predicts steps 1 and 2, each later step has its own window
    assert (after_calls - calls, after_items - items) == (1, 7 - HISTORY)


FRAMES, POSES, ACTIONS = trajectory("rocket", 3)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"proprio": None}, 422, "invalid_proprio"),
        ({"proprio": [p[:6] for p in POSES.tolist()]}, 422, "invalid_proprio"),
        ({"proprio": [POSES[0].tolist(), POSES[1].tolist(), POSES[2, :6].tolist()]}, 422, "invalid_proprio"),
        ({"proprio": [POSES[0].tolist(), [1e39] * 7, POSES[2].tolist()]}, 422, "invalid_proprio"),
        ({"proprio": POSES[:2].tolist(), "actions": ACTIONS[:1].tolist()}, 422, "invalid_proprio"),  # 3 frames
        ({"proprio": POSES[:1].tolist()}, 422, "validation_error"),
        ({"actions": ACTIONS[:1].tolist()}, 422, "invalid_action"),
        ({"actions": None}, 422, "invalid_action"),
        ({"actions": [a[:6] for a in ACTIONS.tolist()]}, 422, "invalid_action"),
        ({"actions": [ACTIONS[0].tolist(), ACTIONS[1, :6].tolist()]}, 422, "invalid_action"),
        ({"actions": [[0.0] * 7] * 301, "proprio": [[0.0] * 7] * 302}, 413, "too_many_steps"),
        ({"observations": None, "states": [[0.0] * D] * 3}, 422, "invalid_context"),
        ({"observations": [{"image": "aGk="}] * 3}, 400, "invalid_image"),
    ],
)
def test_bad_input_is_a_clear_4xx(client, change, status, code):
    body = {k: v for k, v in {**request(FRAMES, POSES, ACTIONS), **change}.items() if v is not None}
    assert_error(client.post("/surprise", json=body), status, code)


def test_the_stream_scores_each_frame_as_post_surprise_does(client):
    """Frames sent one by one with their pose (half binary after a JSON message with the action and pose, half as
    JSON with the frame in base64) are scored like the whole sequence sent to POST /surprise."""
    frames, poses, actions = trajectory("rocket", 7)
    with client.websocket_connect("/stream/surprise?model=ac") as ws:
        hello = ws.receive_json()
        assert (hello["type"], hello["frames_per_clip"], hello["action_dim"], hello["proprio_dim"]) == (
            "ready", 1, 7, 7)
        replies = []
        for t, frame in enumerate(frames):
            conditions = {"proprio": poses[t].tolist(), **({"action": actions[t - 1].tolist()} if t else {})}
            if t % 2:
                ws.send_text(json.dumps({"frame": b64(png_bytes(frame)), **conditions}))
            else:
                ws.send_text(json.dumps(conditions))
                ws.send_bytes(png_bytes(frame))
            replies.append(ws.receive_json())
    assert [r["step"] for r in replies] == list(range(7))
    assert replies[0]["score"] is None
    http = client.post("/surprise", json=request(frames, poses, actions)).json()
    np.testing.assert_allclose([r["distance"] for r in replies[1:]], http["distances"], rtol=1e-4)
    np.testing.assert_allclose([r["score"] for r in replies[1:]], http["scores"], rtol=1e-4, atol=1e-4)
    assert [r["step"] for r in replies if r["surprising"]] == http["surprising"]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"frame": 0}], "invalid_proprio"),  # no proprio with the first frame
        ([{"frame": 0, "proprio": [0.0] * 6}], "invalid_proprio"),
        ([{"proprio": "up"}], "invalid_proprio"),
        ([{"frame": 0, "proprio": [0.0] * 7}, {"frame": 1, "proprio": [0.0] * 7}], "invalid_action"),
        ([{"frame": 0, "proprio": [0.0] * 7}, {"frame": 1, "proprio": [0.0] * 7, "action": [0.0] * 6}],
         "invalid_action"),
    ],
)
def test_bad_stream_input_closes_with_a_clear_code(client, messages, error):
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect("/stream/surprise?model=ac") as ws:
        assert ws.receive_json()["type"] == "ready"
        for message in messages:
            if "frame" in message:
                message = {**message, "frame": b64(png_bytes(FRAMES[message["frame"]]))}
            ws.send_text(json.dumps(message))
        while (reply := ws.receive_json())["type"] == "score":
            pass
        with pytest.raises(WebSocketDisconnect) as closing:
            ws.receive_json()
    assert reply["error"]["code"] == error, reply
    assert closing.value.code == 1007
