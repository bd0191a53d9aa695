"""POST /surprise on the exported demo world model: scores equal a reference computed by hand with ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from models.demo import world
from tests.conftest import png_bytes
from tests.support.toolkit import assert_error, b64, batch_totals


def demo_trajectory(seed: int = 21, steps: int = 10, violation: str | None = None):
    if violation is None:
        data = world.generate_trajectories(seed, 1, steps=steps)
        return data.frames()[0], data.actions[0], -1
    pair = world.generate_violations(seed, 1, violation, steps=steps, onset_range=(5, 6))
    return pair.violated.frames()[0], pair.violated.actions[0], int(pair.onset[0])


def reference_scores(entry, frames: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exported encoder and predictor run directly: state t = encoder(frames t-1, t); distance t =
    mse(predictor(state t-1, action t-1), state t); score = (distance - mean) / std from the manifest."""
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["input"]["dtype"] == "uint8"  # the encoder takes pixels and normalises them itself
    x = frames.transpose(0, 3, 1, 2)  # (F, 3, 64, 64)
    clips = np.ascontiguousarray(np.stack([x[:-1], x[1:]], axis=1))  # clip t-1 ends at frame t: (F-1, 2, 3, 64, 64)
    encoder = ort.InferenceSession(str(entry / "encoder.onnx"), providers=["CPUExecutionProvider"])
    predictor = ort.InferenceSession(str(entry / "predictor.onnx"), providers=["CPUExecutionProvider"])
    states = encoder.run(["pooled"], {"pixel_values": clips})[0]
    predicted = predictor.run(["next_state"], {"state": states[:-1], "action": actions[1:].astype(np.float32)})[0]
    distance = ((predicted - states[1:]) ** 2).mean(-1)
    spec = manifest["surprise"]
    return distance, (distance - spec["mean"]) / spec["std"]


def frames_payload(frames: np.ndarray) -> list[dict]:
    return [{"image": b64(png_bytes(f))} for f in frames]


def test_surprise_equals_the_onnx_reference_computed_by_hand(client, demo_repository):
    frames, actions, _ = demo_trajectory()
    response = client.post("/surprise", json={"observations": frames_payload(frames), "actions": actions.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    distance, scores = reference_scores(demo_repository / "demo", frames, actions)
    assert body["steps"] == list(range(2, len(frames)))  # a state is a 2-frame clip: frame 1 is the first state
    np.testing.assert_allclose(body["distances"], distance, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(body["scores"], scores, rtol=1e-4, atol=1e-4)
    assert body["surprising"] == [s for s, z in zip(body["steps"], scores, strict=True) if z > body["threshold"]]
    assert body["calibration"]["metric"] == "mse"
    assert body["calibration"]["std"] > 0


def test_precomputed_states_give_the_same_scores(client, demo_repository):
    frames, actions, _ = demo_trajectory()
    embedded = client.post("/embed", json={"normalize": False, "inputs": [
        {"frames": [b64(png_bytes(frames[t - 1])), b64(png_bytes(frames[t]))]} for t in range(1, len(frames))]})
    assert embedded.status_code == 200, embedded.text
    states = embedded.json()["embeddings"]
    by_states = client.post("/surprise", json={"states": states, "actions": actions[1:].tolist()})
    by_frames = client.post("/surprise", json={"observations": frames_payload(frames), "actions": actions.tolist()})
    assert by_states.status_code == 200, by_states.text
    assert by_states.json()["steps"] == list(range(1, len(states)))
    np.testing.assert_allclose(by_states.json()["scores"], by_frames.json()["scores"], rtol=1e-4, atol=1e-4)


def test_a_teleport_is_the_surprising_step(client):
    frames, actions, onset = demo_trajectory(seed=3, violation="ball_teleport")
    body = client.post("/surprise", json={"observations": frames_payload(frames), "actions": actions.tolist()}).json()
    scores = dict(zip(body["steps"], body["scores"], strict=True))
    assert body["surprising"][0] == onset  # nothing before the teleport is surprising; the teleport is
    assert scores[onset] > 3 * max(abs(scores[s]) for s in scores if s < onset)
    # the threshold is the caller's to move: above every score, nothing is listed
    again = client.post("/surprise", json={"observations": frames_payload(frames), "actions": actions.tolist(),
                                          "threshold": max(scores.values()) + 1}).json()
    assert again["surprising"] == []
    assert again["scores"] == body["scores"]


STATE = [0.0] * 128


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"states": [STATE, STATE], "actions": [[0.1, 0.1, 0.1]]}, 422, "invalid_action"),
        ({"states": [STATE, STATE], "actions": [[5.0, 0.0]]}, 422, "invalid_action"),
        ({"states": [STATE, STATE], "actions": [[0.1, 0.1], [0.1]]}, 422, "invalid_action"),
        ({"states": [STATE, STATE, STATE], "actions": [[0.1, 0.1]]}, 422, "invalid_action"),
        ({"states": [STATE, [0.0] * 127], "actions": [[0.1, 0.1]]}, 422, "dimension_mismatch"),
        ({"states": [STATE], "actions": [[0.1, 0.1]]}, 422, "validation_error"),
        ({"states": [STATE, STATE], "actions": []}, 422, "validation_error"),
        ({"actions": [[0.1, 0.1]]}, 422, "validation_error"),
        ({"states": [STATE, STATE]}, 422, "invalid_action"),  # the demo is action-conditioned
        ({"states": [STATE, STATE], "observations": [{"image": "aGk="}], "actions": [[0.1, 0.1]]}, 422,
         "validation_error"),
        ({"observations": [{"image": "aGk="}] * 2, "actions": [[0.1, 0.1]]}, 400, "invalid_image"),
        ({"observations": [{"image": "***"}] * 2, "actions": [[0.1, 0.1]]}, 400, "invalid_base64"),
        ({"states": [STATE] * 301, "actions": [[0.0, 0.0]] * 300}, 413, "too_many_steps"),
        ({"model": "nope", "states": [STATE, STATE], "actions": [[0.0, 0.0]]}, 404, "model_not_found"),
    ],
)
def test_surprise_bad_input_is_a_clear_4xx(client, payload, status, code):
    assert_error(client.post("/surprise", json=payload), status, code)


def test_too_few_frames_for_one_scored_step_is_a_422(client):
    frames, actions, _ = demo_trajectory(steps=1)
    response = client.post("/surprise", json={"observations": frames_payload(frames), "actions": actions.tolist()})
    assert assert_error(response, 422, "invalid_context")["detail"]["min_observations"] == 3


def test_a_state_with_nan_is_refused(client):
    bad = [float("nan")] + STATE[1:]
    response = client.post("/surprise", content=json.dumps({"states": [STATE, bad], "actions": [[0.0, 0.0]]}),
                           headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_vector")


def test_states_at_the_float32_limit_give_a_finite_answer(client):
    huge = [3e38] * 128
    response = client.post("/surprise", json={"states": [huge, [-v for v in huge]], "actions": [[0.0, 0.0]]})
    assert response.status_code == 200, response.text
    assert np.isfinite(response.json()["scores"]).all()
    assert response.json()["surprising"] == [1]



def test_every_step_of_a_request_is_predicted_in_one_predictor_batch(client):
    frames, actions, _ = demo_trajectory(steps=12)
    calls, items = batch_totals(client, "demo")
    response = client.post("/surprise", json={"observations": frames_payload(frames), "actions": actions.tolist()})
    assert response.status_code == 200, response.text
    after_calls, after_items = batch_totals(client, "demo")
    assert (after_calls - calls, after_items - items) == (1, len(response.json()["steps"]))


def test_a_video_is_sampled_like_embed_and_scored_frame_by_frame(client):
    from tests.video_files import write_video

    frames, actions, onset = demo_trajectory(seed=3, violation="ball_teleport")
    video = b64(write_video(list(frames)))
    body = {"observations": [{"video": video}], "actions": actions.tolist(), "num_frames": len(frames), "stride": 1}
    response = client.post("/surprise", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["steps"] == list(range(2, len(frames)))
    assert response.json()["surprising"][0] == onset
    # without num_frames a video gives 16 frames: they no longer match the 10 actions
    del body["num_frames"]
    assert_error(client.post("/surprise", json=body), 422, "invalid_action")


def test_a_video_observation_echoes_its_sampling_like_embed(client):
    from tests.video_files import write_video

    frames, actions, _ = demo_trajectory(seed=3, violation="ball_teleport")
    body = {"observations": [{"video": b64(write_video(list(frames)))}], "actions": actions.tolist(),
            "num_frames": len(frames), "stride": 1}
    response = client.post("/surprise", json=body)
    assert response.status_code == 200, response.text
    (sampling,) = response.json()["sampling"]
    assert (sampling["mode"], sampling["num_frames"], sampling["stride"]) == ("stride", len(frames), 1)
    assert sampling["frame_indices"] == list(range(len(frames)))
    assert sampling["resolution"] == [64, 64]
    images = client.post("/surprise", json={"observations": frames_payload(frames), "actions": actions.tolist()})
    assert images.json()["sampling"] is None  # no video, nothing sampled
