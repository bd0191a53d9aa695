"""What the served demo model computes equals the PyTorch model: embeddings, clips, tensors, rollouts.

Marked torch_parity: these export through PyTorch (once per session) and load the PyTorch model."""


import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.demo import load_demo_model
from tests.support.toolkit import assert_error, b64, cosine

pytestmark = pytest.mark.torch_parity


def preprocessed(png: bytes) -> torch.Tensor:
    """resize (bilinear) -> [0,1] -> mean/std, as (3, 64, 64)."""
    model = load_demo_model()
    image = Image.open(io.BytesIO(png)).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(model.mean).view(3, 1, 1)) / torch.tensor(model.std).view(3, 1, 1)


def torch_reference(*pngs: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The shipped PyTorch demo model on the same frames; one image is repeated into the 2-frame clip."""
    frames = [preprocessed(p) for p in pngs]
    clip = torch.stack(frames if len(frames) == 2 else [frames[0], frames[0]])  # (2, 3, 64, 64)
    with torch.inference_mode():
        pooled, tokens = load_demo_model().encoder(clip[None])
    return pooled[0].numpy(), tokens[0].numpy()


def test_embed_matches_pytorch_for_real_photos(client, photos):
    response = client.post("/embed", json={"inputs": [{"image": b64(p)} for p in photos.values()], "normalize": False,
                                           "output": "tokens"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "demo" and body["dim"] == 128 and body["space_id"].startswith("demo-")
    for i, png in enumerate(photos.values()):
        ref_pooled, ref_tokens = torch_reference(png)
        assert cosine(body["embeddings"][i], ref_pooled) >= 0.9999
        assert np.asarray(body["tokens"][i]).shape == (64, 64)
        assert cosine(np.ravel(body["tokens"][i]), ref_tokens.ravel()) >= 0.9999

def test_embed_tensor_fast_path_equals_image_path(client, photos):
    png = photos["rocket"]
    tensor = preprocessed(png).numpy()
    by_tensor = client.post("/embed", json={"inputs": [{"tensor": {"data": b64(tensor.tobytes()), "shape": [3, 64, 64]}}]})
    by_image = client.post("/embed", json={"inputs": [{"image": b64(png)}]})
    assert cosine(by_tensor.json()["embeddings"][0], by_image.json()["embeddings"][0]) > 0.99999

def test_embed_two_frame_clip_and_one_image_follow_the_clip_rule(client, photos):
    """The manifest says 2 frames per clip: a 'frames' input is one clip; one image is repeated to fill it."""
    a, b = photos["coffee"], photos["rocket"]
    clip = client.post("/embed", json={"inputs": [{"frames": [b64(a), b64(b)]}, {"frames": [b64(b)]}, {"image": b64(b)}],
                                       "normalize": False})
    assert clip.status_code == 200, clip.text
    got = clip.json()["embeddings"]
    assert cosine(got[0], torch_reference(a, b)[0]) >= 0.9999
    assert cosine(got[1], torch_reference(b)[0]) >= 0.9999
    np.testing.assert_allclose(got[1], got[2], atol=1e-5)
    assert cosine(got[0], got[2]) < 0.9999  # the older frame matters
    stacked = np.stack([preprocessed(a).numpy(), preprocessed(b).numpy()])
    by_tensor = client.post("/embed", json={"inputs": [{"tensor": {"data": b64(stacked.tobytes()), "shape": [2, 3, 64, 64]}}],
                                            "normalize": False})
    assert cosine(by_tensor.json()["embeddings"][0], got[0]) > 0.99999
    assert_error(client.post("/embed", json={"inputs": [{"frames": [b64(a)] * 3}]}), 422, "invalid_clip")

def test_predict_future_matches_a_pytorch_rollout(client, photos):
    actions = [[0.5, 0.0], [0.0, -0.25], [1.0, 1.0]]
    response = client.post("/predict_future", json={"context": [{"image": b64(photos["astronaut"])}], "actions": actions})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["states"]) == 3 and all(len(s) == 128 for s in body["states"])
    model = load_demo_model()
    state = torch.from_numpy(torch_reference(photos["astronaut"])[0])[None]
    with torch.inference_mode():
        for step, action in enumerate(actions):
            state = model.predictor(state, torch.tensor([action]))
            assert cosine(body["states"][step], state[0].numpy()) >= 0.9999
    two = client.post("/predict_future", json={"context": [{"image": b64(photos["coffee"])}, {"image": b64(photos["astronaut"])}],
                                               "actions": actions[:1]}).json()
    assert cosine(two["initial_state"], torch_reference(photos["coffee"], photos["astronaut"])[0]) >= 0.9999
    from_state = client.post("/predict_future", json={"state": body["initial_state"], "actions": actions}).json()
    np.testing.assert_allclose(from_state["states"], body["states"], atol=1e-5)
