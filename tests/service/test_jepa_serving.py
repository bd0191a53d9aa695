"""A Hugging Face I-JEPA, exported by jepa-export, served by /embed: equal to transformers on real photos."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.cli import main
from tests.conftest import serving
from tests.jepa_checkpoints import cosine_rows, tiny_ijepa_folder

pytestmark = pytest.mark.torch_parity  # served outputs against the PyTorch / transformers model

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def test_served_ijepa_equals_transformers(tmp_path: Path, settings_factory, photos):
    hf = tiny_ijepa_folder(tmp_path / "hf", seed=3)
    repo = tmp_path / "repo"
    assert main(["ijepa", str(tmp_path / "hf"), "--name", "ijepa-tiny", "--out", str(repo), "--no-fp16"]) == 0
    pngs = list(photos.values())
    # the reference: what the manifest asks for (bicubic to 32x32, ImageNet mean/std), run by transformers
    pixels = []
    for png in pngs:
        rgb = Image.open(io.BytesIO(png)).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
        pixels.append(((np.asarray(rgb, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1))
    with torch.inference_mode():
        ref = hf(pixel_values=torch.from_numpy(np.stack(pixels))).last_hidden_state.numpy()
    with serving(settings_factory(model_repository=repo, default_model="ijepa-tiny")) as client:
        body = {"model": "ijepa-tiny", "inputs": [{"image": base64.b64encode(p).decode()} for p in pngs],
                "normalize": False, "output": "tokens"}
        response = client.post("/embed", json=body)
        assert response.status_code == 200, response.text
        out = response.json()
        assert out["model"] == "ijepa-tiny"
        assert out["dim"] == 32
        assert out["space_id"].startswith("ijepa-")
        assert cosine_rows(np.asarray(out["embeddings"]), ref.mean(axis=1)) >= 0.9999
        assert cosine_rows(np.asarray(out["tokens"]), ref) >= 0.9999
        listed = client.get("/models").json()
        assert "ijepa-tiny" in str(listed)
        (served,) = [m for m in listed["models"] if m["name"] == "ijepa-tiny"]
        # what reproduced transformers above: a fused-attention graph fed uint8 pixels by the server
        assert served["components"]["encoder"]["attention"] == "mha"
        assert served["input"]["dtype"] == "uint8"
