"""V-JEPA 2 served: a real MP4 written with PyAV is sampled on the server and embedded like transformers does."""

from __future__ import annotations

import base64
import io

import av
import numpy as np
import pytest
import torch
from PIL import Image

from export.cli import main
from tests.conftest import photo, serving
from tests.jepa_checkpoints import cosine_rows, tiny_vjepa2_folder
from tests.video_files import write_video

pytestmark = pytest.mark.torch_parity  # served outputs against the PyTorch / transformers model

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
FRAMES = 4  # frames per clip of the export


@pytest.fixture(scope="module")
def vjepa2(tmp_path_factory):
    """(a client of the served export, the transformers model it was exported from)"""
    from service.settings import Settings

    root = tmp_path_factory.mktemp("vjepa2")
    hf = tiny_vjepa2_folder(root / "hf", seed=5)
    assert main(["vjepa2", str(root / "hf"), "--name", "vjepa2-tiny", "--out", str(root / "repo"),
                 "--frames", str(FRAMES), "--no-fp16"]) == 0
    settings = Settings(model_repository=root / "repo", data_dir=root / "data", default_model="vjepa2-tiny",
                        max_queue_delay_ms=1.0)
    with serving(settings) as client:
        yield client, hf


@pytest.fixture(scope="module")
def mp4() -> bytes:
    """12 frames at 12 fps: the astronaut photo panning 3 px per frame (a real scene, real motion)."""
    base = np.asarray(Image.fromarray(photo("astronaut")).resize((64, 48)))
    return write_video([np.roll(base, 3 * i, axis=1) for i in range(12)], fps=12)


def model_pixels(image: Image.Image) -> np.ndarray:
    """The manifest's rule: bicubic to 32x32, ImageNet mean/std, CHW."""
    rgb = image.convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
    return ((np.asarray(rgb, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def reference_tokens(hf, clips: np.ndarray) -> np.ndarray:
    """clips (B, T, 3, H, W) -> transformers' last hidden state (B, tokens, D)."""
    with torch.inference_mode():
        return hf(pixel_values_videos=torch.from_numpy(clips), skip_predictor=True).last_hidden_state.numpy()


def decoded_frames(data: bytes) -> list[Image.Image]:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def test_an_mp4_is_sampled_as_asked_and_embedded_like_transformers(vjepa2, mp4):
    client, hf = vjepa2
    wanted = [1, 4, 7, 10]  # stride 3 from the first frame at or after 0.1 s (frame 1 is at 1/12 s)
    frames = decoded_frames(mp4)
    clip = np.stack([model_pixels(frames[i]) for i in wanted])[None]
    ref = reference_tokens(hf, clip)
    body = {"inputs": [{"video": base64.b64encode(mp4).decode()}], "num_frames": FRAMES, "stride": 3,
            "start_s": 0.1, "normalize": False, "output": "tokens"}
    response = client.post("/embed", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    echo = out["sampling"][0]
    assert echo["frame_indices"] == wanted and echo["mode"] == "stride" and echo["stride"] == 3
    assert echo["num_frames"] == FRAMES and echo["padded"] == 0 and echo["resolution"] == [32, 32]
    assert echo["timestamps_s"] == pytest.approx([i / 12 for i in wanted], abs=1e-3)
    assert echo["source"]["frames"] == 12 and echo["source"]["width"] == 64 and echo["source"]["height"] == 48
    assert cosine_rows(np.asarray(out["tokens"]), ref) >= 0.9999
    assert cosine_rows(np.asarray(out["embeddings"]), ref.mean(axis=1)) >= 0.9999

    # the same file as a multipart upload, sampled by fps, with one vector per tubelet step
    files = [("files", ("clip.mp4", mp4, "application/octet-stream"))]
    fields = {"num_frames": "4", "fps": "4", "output": "frames", "normalize": "false"}
    response = client.post("/embed", files=files, data=fields)
    assert response.status_code == 200, response.text
    out = response.json()
    by_time = [0, 3, 6, 9]  # every 0.25 s at 12 fps
    assert out["sampling"][0]["frame_indices"] == by_time and out["sampling"][0]["mode"] == "fps"
    ref = reference_tokens(hf, np.stack([model_pixels(frames[i]) for i in by_time])[None])
    assert np.asarray(out["frames"]).shape == (1, 2, 64)
    assert cosine_rows(np.asarray(out["frames"])[0], ref.reshape(2, 16, 64).mean(axis=1)) >= 0.9999


def test_an_image_is_a_clip_of_identical_frames(vjepa2, photos):
    client, hf = vjepa2
    png = photos["coffee"]
    image = model_pixels(Image.open(io.BytesIO(png)))
    ref = reference_tokens(hf, np.repeat(image[None, None], FRAMES, axis=1))
    response = client.post("/embed", json={"inputs": [{"image": base64.b64encode(png).decode()}],
                                           "normalize": False, "output": "tokens"})
    assert response.status_code == 200, response.text
    assert response.json()["sampling"] is None
    assert cosine_rows(np.asarray(response.json()["tokens"]), ref) >= 0.9999


BAD_REQUESTS = [  # (what, body change, status, error code)
    ("truncated", {}, 400, "invalid_video"),
    ("more frames than a clip holds", {"num_frames": FRAMES + 1}, 422, "invalid_clip"),
    ("stride and fps", {"stride": 2, "fps": 3}, 422, "validation_error"),
    ("start after the end", {"start_s": 30}, 422, "invalid_sampling"),
]


def test_bad_video_requests_are_clear_4xx(vjepa2, mp4):
    client, _ = vjepa2
    for what, change, status, code in BAD_REQUESTS:
        video = base64.b64encode(mp4[: len(mp4) // 2] if what == "truncated" else mp4).decode()
        response = client.post("/embed", json={"inputs": [{"video": video}], **change})
        assert response.status_code == status, (what, response.text)
        assert response.json()["error"]["code"] == code, what
    assert client.get("/readyz").status_code == 200


def test_predict_future_from_a_video_equals_the_transformers_mask_predictor(vjepa2, mp4):
    """The export's future graph (context: the clip's first tubelet step, 2 frames; predicts the next step)."""
    client, hf = vjepa2
    frames = decoded_frames(mp4)
    wanted = [4, 7]  # stride 3 from 0.3 s
    body = {"context": [{"video": base64.b64encode(mp4).decode()}], "stride": 3, "start_s": 0.3, "output": "tokens"}
    response = client.post("/predict_future", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["sampling"]["frame_indices"] == wanted and out["sampling"]["num_frames"] == 2
    clip = np.stack([model_pixels(frames[i]) for i in wanted])[None]
    with torch.inference_mode():
        context = hf(pixel_values_videos=torch.from_numpy(clip), skip_predictor=True).last_hidden_state
        positions = torch.arange(32).unsqueeze(0)
        ref = hf.predictor(encoder_hidden_states=context, context_mask=[positions[:, :16]],
                           target_mask=[positions[:, 16:]]).last_hidden_state.numpy()
    tokens = np.asarray(out["tokens"])
    assert tokens.shape == (1, 16, 64)
    assert cosine_rows(tokens, ref) >= 0.9999
    assert cosine_rows(np.asarray(out["states"]), ref.mean(axis=1)) >= 0.9999

    # actions make no sense for this model: a clear 422, not a silent ignore
    body = {"context": [{"video": base64.b64encode(mp4).decode()}], "actions": [[0.0]]}
    response = client.post("/predict_future", json=body)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_context"


def test_the_per_request_decode_budget_answers_413_before_decoding(settings_factory):
    """max_video_decode_bytes: the frames a request's videos will hold at the model's input size, and each
    video's decoder working set (from its header), are refused before any frame is decoded."""
    small = base64.b64encode(write_video([np.full((48, 64, 3), 8 * i, np.uint8) for i in range(4)])).decode()
    large = base64.b64encode(write_video([np.full((768, 768, 3), 8 * i, np.uint8) for i in range(2)])).decode()
    with serving(settings_factory(max_video_decode_bytes=1024 * 1024)) as client:
        one = client.post("/embed", json={"inputs": [{"video": small}]})
        assert one.status_code == 200, one.text
        frames = one.json()["sampling"][0]["num_frames"]
        many = client.post("/embed", json={"inputs": [{"video": small}] * 64, "num_frames": frames})
        assert many.status_code == 413 and many.json()["error"]["code"] == "video_too_large", many.text
        assert many.json()["error"]["detail"]["max_decoded_bytes"] == 1024 * 1024
        wide = client.post("/embed", json={"inputs": [{"video": large}]})  # 768x768: ~21 MB of decoder frames
        assert wide.status_code == 413 and wide.json()["error"]["code"] == "video_too_large", wide.text
        assert client.get("/readyz").status_code == 200
