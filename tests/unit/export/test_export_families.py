"""jepa-export ijepa|vjepa2: the exported ONNX equals transformers / the original code, with a dynamic batch."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.cli import main
from export.pipeline import FP16_GATE, FP32_GATE
from tests.jepa_checkpoints import (
    cosine_rows,
    original_vjepa2_file,
    random_pixels,
    tiny_ijepa_folder,
    tiny_vjepa2_folder,
)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_ijepa_hf_export_equals_transformers(tmp_path: Path):
    hf = tiny_ijepa_folder(tmp_path / "hf")
    assert main(["ijepa", str(tmp_path / "hf"), "--name", "ijepa-tiny", "--out", str(tmp_path / "repo")]) == 0
    entry = tmp_path / "repo" / "ijepa-tiny"
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["family"] == "ijepa"
    assert manifest["space_id"].startswith("ijepa-")
    assert manifest["input"] == {
        "kind": "image", "layout": "NCHW", "channels": 3, "dtype": "uint8", "image_size": [32, 32], "resize": "bicubic",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "frames_per_clip": 1, "tubelet": 1,
        "patch_size": 8,
    }
    assert manifest["output"] == {"dim": 32, "token_grid": [4, 4], "pooling": "mean_final_patch_tokens"}
    encoder = manifest["components"]["encoder"]
    assert encoder["inputs"] == {"pixel_values": [-1, 3, 32, 32]}
    assert encoder["parity"]["fp32"]["min_cosine"] >= FP32_GATE
    assert encoder["files"] == {"fp32": "encoder.onnx", "fp16": "encoder.fp16.onnx"}  # fp16 passed its gate
    assert encoder["parity"]["fp16"]["min_cosine"] >= FP16_GATE
    assert encoder["attention"] == {"fp32": "mha", "fp16": "mha"}  # the fused operator by default, both precisions
    for precision in ("encoder.onnx", "encoder.fp16.onnx"):
        onnx = session(entry / precision)
        for batch in (1, 5):  # dynamic batch; the graph takes uint8 pixels and normalises them itself
            pixels, x = random_pixels((batch, 3, 32, 32), batch)
            pooled, tokens = onnx.run(["pooled", "tokens"], {"pixel_values": pixels})
            with torch.inference_mode():
                ref = hf(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
            assert tokens.shape == (batch, 16, 32)
            assert pooled.shape == (batch, 32)
            gate = 0.9999 if precision == "encoder.onnx" else 0.999
            assert cosine_rows(tokens, ref) >= gate, precision
            assert cosine_rows(pooled, ref.mean(axis=1)) >= gate, precision


def test_vjepa2_hf_export_equals_transformers(tmp_path: Path):
    hf = tiny_vjepa2_folder(tmp_path / "hf")
    code = main(["vjepa2", str(tmp_path / "hf"), "--name", "vjepa2-tiny", "--out", str(tmp_path / "repo"),
                 "--frames", "4", "--no-fp16"])
    assert code == 0
    entry = tmp_path / "repo" / "vjepa2-tiny"
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["family"] == "vjepa2"
    spec = manifest["input"]
    assert (spec["kind"], spec["layout"], spec["frames_per_clip"], spec["tubelet"], spec["patch_size"]) == (
        "video", "NCTHW", 4, 2, 8)
    assert spec["image_size"] == [32, 32]
    assert spec["mean"] == [0.485, 0.456, 0.406]
    assert manifest["output"]["dim"] == 64
    assert manifest["output"]["token_grid"] == [2, 4, 4]
    assert manifest["components"]["encoder"]["inputs"] == {"pixel_values": [-1, 3, 4, 32, 32]}
    assert manifest["components"]["encoder"]["outputs"] == ["pooled", "frames", "tokens"]
    onnx = session(entry / "encoder.onnx")
    for batch in (1, 3):
        pixels, video = random_pixels((batch, 3, 4, 32, 32), batch)
        pooled, frames, tokens = onnx.run(["pooled", "frames", "tokens"], {"pixel_values": pixels})
        with torch.inference_mode():
            ref = hf(pixel_values_videos=torch.from_numpy(video).permute(0, 2, 1, 3, 4),
                     skip_predictor=True).last_hidden_state.numpy()
        assert tokens.shape == (batch, 32, 64)
        assert frames.shape == (batch, 2, 64)
        assert cosine_rows(tokens, ref) >= 0.9999
        assert cosine_rows(pooled, ref.mean(axis=1)) >= 0.9999
        assert cosine_rows(frames, ref.reshape(batch, 2, 16, 64).mean(axis=2)) >= 0.9999


def test_vjepa2_ac_export_reproduces_the_original_code(tmp_path: Path):
    """Encoder and action-conditioned predictor ONNX vs the outputs of Meta's code (committed fixtures)."""
    enc, ac = original_vjepa2_file(tmp_path / "vjepa2-ac-tiny.pt")
    steps = ac.config["steps"]
    code = main(["vjepa2", str(tmp_path / "vjepa2-ac-tiny.pt"), "--name", "ac", "--out", str(tmp_path / "repo"),
                 "--frames", "4", "--history", str(steps), "--heads", "2", "--predictor-heads", "2",
                 "--image-size", "32", "--no-fp16", "--float-input"])  # the fixtures' inputs are float clips
    assert code == 0
    entry = tmp_path / "repo" / "ac"
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["family"] == "vjepa2_ac"
    predictor = manifest["components"]["predictor"]
    assert predictor["inputs"] == {"context": [-1, steps * 16, 64], "actions": [-1, steps, 7], "states": [-1, steps, 7]}
    assert predictor["parity"]["fp32"]["min_cosine"] >= FP32_GATE
    assert predictor["attention"] == manifest["components"]["encoder"]["attention"] == {"fp32": "mha"}
    contract = manifest["predictor"]
    assert (contract["action_dim"], contract["context_frames"], contract["tokens_per_frame"]) == (7, steps, 16)
    (tokens,) = session(entry / "encoder.onnx").run(["tokens"], {"pixel_values": enc.inputs["video"].numpy()})
    assert cosine_rows(tokens, enc.outputs["tokens"]) >= 0.9999
    feeds = {name: ac.inputs[name].numpy() for name in ("context", "actions", "states")}
    (predicted,) = session(entry / "predictor.onnx").run(["predicted"], feeds)
    assert cosine_rows(predicted, ac.outputs["predicted"]) >= 0.9999
    one = {name: value[:1] for name, value in feeds.items()}  # dynamic batch
    assert session(entry / "predictor.onnx").run(["predicted"], one)[0].shape == (1, steps * 16, 64)


def test_family_export_errors_are_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture):
    original_vjepa2_file(tmp_path / "v.pt", with_predictor=False)
    assert main(["ijepa", str(tmp_path / "v.pt"), "--name", "x", "--out", str(tmp_path / "repo")]) == 1
    assert "holds a vjepa2 model" in capsys.readouterr().err
    assert main(["vjepa2", str(tmp_path / "v.pt"), "--name", "x", "--out", str(tmp_path / "repo"), "--heads", "2",
                 "--image-size", "32", "--frames", "3"]) == 1
    assert "not a multiple of the tubelet" in capsys.readouterr().err
    assert main(["ijepa", str(tmp_path / "absent"), "--name", "x", "--out", str(tmp_path / "repo")]) == 1
    assert not (tmp_path / "repo" / "x").exists()


def test_surprise_trajectories_are_checked_before_anything_is_exported(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture):
    original_vjepa2_file(tmp_path / "v.pt", with_predictor=False)
    original_vjepa2_file(tmp_path / "ac.pt")
    normal = tmp_path / "normal"
    normal.mkdir()
    args = ["--name", "x", "--out", str(tmp_path / "repo"), "--heads", "2", "--predictor-heads", "2",
            "--image-size", "32", "--surprise-trajectories", str(normal)]
    assert main(["vjepa2", str(tmp_path / "v.pt"), *args]) == 1
    assert "calibrates V-JEPA 2-AC's action-conditioned predictor" in capsys.readouterr().err
    assert main(["vjepa2", str(tmp_path / "ac.pt"), *args]) == 1
    assert "no .npz trajectory" in capsys.readouterr().err
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    np.savez(normal / "short_poses.npz", frames=frames, poses=np.zeros((3, 6)), actions=np.zeros((2, 7)))
    assert main(["vjepa2", str(tmp_path / "ac.pt"), *args]) == 1
    err = capsys.readouterr().err
    assert "short_poses.npz" in err
    assert "poses [3, 6]" in err
    (normal / "short_poses.npz").write_bytes(b"not a zip")
    assert main(["vjepa2", str(tmp_path / "ac.pt"), *args]) == 1
    assert "not a readable .npz" in capsys.readouterr().err
    assert not (tmp_path / "repo" / "x").exists()


def test_models_over_the_protobuf_limit_keep_weights_beside_the_graph(tmp_path: Path, monkeypatch):
    """ViT-H/ViT-g exceed 2 GiB; simulated here by lowering the threshold to zero on a tiny model."""
    import export.onnx_graph

    monkeypatch.setattr(export.onnx_graph, "EXTERNAL_DATA_BYTES", 0)
    hf = tiny_ijepa_folder(tmp_path / "hf")
    assert main(["ijepa", str(tmp_path / "hf"), "--name", "big", "--out", str(tmp_path / "repo")]) == 0
    entry = tmp_path / "repo" / "big"
    component = json.loads((entry / "manifest.json").read_text())["components"]["encoder"]
    assert component["external_data"] == {"fp32": "encoder.onnx.data", "fp16": "encoder.fp16.onnx.data"}
    assert component["normalisation"] == {"fp32": "folded", "fp16": "folded"}  # its weights beside the others
    assert all((entry / f).stat().st_mode & 0o044 == 0o044 for f in component["external_data"].values())  # readable
    import onnx

    graph = onnx.load(str(entry / "encoder.onnx"), load_external_data=False).graph
    weights = [t for t in graph.initializer if len(t.dims) >= 2 and np.prod(t.dims) >= 1024]  # the matrices
    assert weights
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in weights)
    pixels, x = random_pixels((2, 3, 32, 32), 0)
    with torch.inference_mode():
        ref = hf(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    for name, gate in (("encoder.onnx", 0.9999), ("encoder.fp16.onnx", 0.999)):
        (tokens,) = session(entry / name).run(["tokens"], {"pixel_values": pixels})
        assert cosine_rows(tokens, ref) >= gate, name


def test_vjepa2_future_prediction_export_equals_the_transformers_predictor(tmp_path: Path):
    """future.onnx = transformers' encoder on the context clip, then its mask predictor at the next step's positions."""
    hf = tiny_vjepa2_folder(tmp_path / "hf", seed=2)
    code = main(["vjepa2", str(tmp_path / "hf"), "--name", "v", "--out", str(tmp_path / "repo"), "--frames", "6",
                 "--future-steps", "2", "--no-fp16"])
    assert code == 0
    entry = tmp_path / "repo" / "v"
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["future"]["context_frames"] == 2
    assert manifest["future"]["future_steps"] == 2
    assert manifest["components"]["future"]["inputs"] == {"pixel_values": [-1, 3, 2, 32, 32]}
    assert manifest["components"]["future"]["attention"] == {"fp32": "mha"}
    pixels, clips = random_pixels((3, 3, 2, 32, 32), 4)
    predicted, pooled = session(entry / "future.onnx").run(["predicted", "context_pooled"], {"pixel_values": pixels})
    with torch.inference_mode():
        context = hf(pixel_values_videos=torch.from_numpy(clips).permute(0, 2, 1, 3, 4),
                     skip_predictor=True).last_hidden_state  # (3, 16, 64): one tubelet step
        positions = torch.arange(16 + 32).unsqueeze(0).repeat(3, 1)
        ref = hf.predictor(encoder_hidden_states=context, context_mask=[positions[:, :16]],
                           target_mask=[positions[:, 16:]]).last_hidden_state.numpy()
    assert predicted.shape == (3, 32, 64)
    assert cosine_rows(predicted, ref) >= 0.9999
    assert cosine_rows(pooled, context.mean(dim=1).numpy()) >= 0.9999
