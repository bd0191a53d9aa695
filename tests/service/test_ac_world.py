"""V-JEPA 2-AC served: /predict_future rolls the token predictor out like a PyTorch reference, /plan plans with it.

The tiny checkpoint is rebuilt from the committed fixture made by Meta's code
(tests/jepa_checkpoints.py); the reference rollout below is written in
PyTorch on our modules, independently of the service's numpy + ONNX path.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoints import LoadOptions, load_checkpoint
from tests.conftest import photo, serving
from tests.jepa_checkpoints import cosine_rows
from tests.support.toolkit import b64

pytestmark = pytest.mark.torch_parity  # served outputs against the PyTorch / transformers model

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
TINY = LoadOptions(heads=2, image_size=32, predictor_heads=2)
P = 16  # tokens per frame: (32 / 8)^2


@pytest.fixture(scope="module")
def ac(ac_export, tmp_path_factory):
    """(a client of the served export `ac-tiny` (--history 2, no surprise calibration), our PyTorch modules loaded
    from the same checkpoint)"""
    from service.settings import Settings

    settings = Settings(model_repository=ac_export.repository, data_dir=tmp_path_factory.mktemp("ac_data"),
                        default_model="ac-tiny", max_queue_delay_ms=1.0, predictor_max_batch_size=128,
                        max_plan_samples=128)
    with serving(settings) as client:
        yield client, load_checkpoint(ac_export.checkpoint, TINY)


def frame_png(shift: int) -> bytes:
    """A real photo, shifted: the 'robot camera' frames of the test."""
    rgb = Image.fromarray(np.roll(photo("coffee"), shift, axis=1)).resize((48, 32))
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue()


def frame_tokens(loaded, png: bytes) -> torch.Tensor:
    """One frame as the authors' world model encodes it: a 2-frame clip of it, tokens layer-normed."""
    rgb = Image.open(io.BytesIO(png)).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(((np.asarray(rgb, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1))
    clip = pixels[:, None].repeat(1, 2, 1, 1)[None]  # (1, 3, 2, H, W)
    with torch.inference_mode():
        return torch.nn.functional.layer_norm(loaded.encoder.tokens(clip), (64,))[0]  # (P, D)


def reference_rollout(loaded, start: torch.Tensor, pose: np.ndarray, actions: np.ndarray, history: int = 2):
    """Autoregressive: predict the next frame from the last `history` frames, poses and actions; poses add."""
    frames, poses, taken = [start], [torch.from_numpy(pose)], []
    out = []
    for action in actions:
        taken.append(torch.from_numpy(action))
        window = slice(-history, None)
        context = torch.cat(frames[window])[None]
        acts, states = torch.stack(taken[window])[None], torch.stack(poses[window])[None]
        with torch.inference_mode():
            predicted = loaded.predictor(context, acts, states)[0, -P:]
        nxt = torch.nn.functional.layer_norm(predicted, (64,))
        frames.append(nxt)
        new_pose = poses[-1].clone()
        new_pose[:3] += taken[-1][:3]
        new_pose[6] = torch.clamp(new_pose[6] + taken[-1][6], 0, 1)
        poses.append(new_pose)
        out.append(nxt.numpy())
    return np.stack(out), torch.stack(poses[1:]).numpy()


POSE = np.array([0.4, -0.1, 0.3, 0.0, 0.0, 0.0, 0.5], np.float32)
ACTIONS = np.array([[0.02, -0.01, 0.0, 0, 0, 0, 0.3], [0.0, 0.03, -0.02, 0, 0, 0, 0.4],
                    [-0.04, 0.0, 0.01, 0, 0, 0, -0.2]], np.float32)


def test_predict_future_equals_a_pytorch_rollout(ac):
    client, loaded = ac
    start = frame_tokens(loaded, frame_png(0))
    ref_tokens, ref_poses = reference_rollout(loaded, start, POSE, ACTIONS)  # the 3rd step slides the window
    body = {"context": [{"image": b64(frame_png(0))}], "proprio": [POSE.tolist()], "actions": ACTIONS.tolist(),
            "output": "tokens"}
    response = client.post("/predict_future", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    tokens = np.asarray(out["tokens"])
    assert tokens.shape == (3, P, 64)
    assert cosine_rows(tokens, ref_tokens) >= 0.9999
    assert np.allclose(np.asarray(out["states"]), ref_tokens.mean(axis=1), atol=1e-3)
    np.testing.assert_allclose(out["proprio"], ref_poses, atol=1e-5)  # gripper clipped to 1 at step 2

    # two observed frames: the action between them comes from their poses
    second = POSE + np.array([0.01, 0.0, 0.0, 0, 0, 0, 0.1], np.float32)
    body = {"context": [{"image": b64(frame_png(0))}, {"image": b64(frame_png(5))}],
            "proprio": [POSE.tolist(), second.tolist()], "actions": ACTIONS[:1].tolist(), "output": "tokens"}
    response = client.post("/predict_future", json=body)
    assert response.status_code == 200, response.text
    frames = torch.stack([frame_tokens(loaded, frame_png(0)), frame_tokens(loaded, frame_png(5))])
    with torch.inference_mode():
        predicted = loaded.predictor(frames.reshape(1, 2 * P, 64),
                                     torch.from_numpy(np.stack([second - POSE, ACTIONS[0]]))[None],
                                     torch.from_numpy(np.stack([POSE, second]))[None])[0, -P:]
    ref = torch.nn.functional.layer_norm(predicted, (64,)).numpy()
    assert cosine_rows(np.asarray(response.json()["tokens"])[0], ref) >= 0.9999


def test_plan_returns_actions_in_the_box_no_worse_than_doing_nothing(ac):
    client, loaded = ac
    body = {"observation": [{"image": b64(frame_png(0))}], "goal": {"image": b64(frame_png(12))},
            "proprio": [POSE.tolist()], "samples": 64, "iterations": 3}
    response = client.post("/plan", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["settings"] == {"horizon": 2, "samples": 64, "iterations": 3, "elites": 10}  # the paper's h, top-k
    assert out["distance"] == "l1"
    actions = np.asarray(out["actions"])
    assert actions.shape == (2, 7)
    low = np.array([-0.05, -0.05, -0.05, 0, 0, 0, -0.75])
    assert (actions >= low - 1e-6).all()
    assert (actions <= -low + 1e-6).all()
    assert out["cost"] <= out["zero_action_cost"]
    assert np.asarray(out["predicted_states"]).shape == (2, 64)
    assert len(out["predicted_proprio"]) == 2

    # the reported cost is the L1 energy of those actions under the reference rollout
    start, goal = frame_tokens(loaded, frame_png(0)), frame_tokens(loaded, frame_png(12))
    predicted, _ = reference_rollout(loaded, start, POSE, actions.astype(np.float32))
    assert out["cost"] == pytest.approx(float(np.abs(predicted[-1] - goal.numpy()).mean()), rel=1e-3)


@pytest.mark.parametrize(("change", "code"), [
    ({"proprio": None}, "invalid_proprio"),
    ({"proprio": [[0.0] * 6]}, "invalid_proprio"),
    ({"goal": None, "goal_state": [0.0] * 64}, "invalid_plan"),
    ({"distance": "l3"}, "validation_error"),
])
def test_plan_errors_name_what_is_missing(ac, change, code):
    client, _ = ac
    body = {"observation": [{"image": b64(frame_png(0))}], "goal": {"image": b64(frame_png(12))},
            "proprio": [POSE.tolist()], "samples": 8, "iterations": 1, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post("/plan", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


def test_without_a_calibration_surprise_says_how_to_calibrate(ac):
    """Exported without --surprise-trajectories: /surprise and its stream refuse, naming the flag."""
    client, _ = ac
    second = POSE + ACTIONS[0]
    body = {"observations": [{"image": b64(frame_png(0))}, {"image": b64(frame_png(5))}],
            "proprio": [POSE.tolist(), second.tolist()], "actions": ACTIONS[:1].tolist()}
    response = client.post("/surprise", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "no_surprise"
    assert "--surprise-trajectories" in response.json()["error"]["message"]
    with client.websocket_connect("/stream/surprise") as ws:
        message = ws.receive_json()
        assert message["error"]["code"] == "no_surprise"
        assert "--surprise-trajectories" in message["error"]["message"]
