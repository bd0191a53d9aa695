import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.demo import export_demo
from export.parity import compare_outputs, row_cosines
from export.pipeline import FP16_GATE, FP32_GATE, ExportOptions, ParityError
from models.demo import build_demo_model, load_demo_model, save_demo_model

quiet = {"log": lambda _: None}


def test_manifest_has_the_contract_fields(demo_repository: Path):
    manifest = json.loads((demo_repository / "demo" / "manifest.json").read_text())
    for key in ("name", "family", "checkpoint_sha256", "tools", "space_id", "input", "output", "components", "predictor"):
        assert key in manifest, key
    assert manifest["input"]["image_size"] == [64, 64]
    assert manifest["input"]["layout"] == "NTCHW" and manifest["input"]["frames_per_clip"] == 2
    assert manifest["predictor"]["context_frames"] == 2
    assert manifest["output"] == {"dim": 128, "token_grid": [8, 8], "token_dim": 64,
                                  "pooling": "linear_head_over_token_grid_batchnorm"}
    assert len(manifest["checkpoint_sha256"]) == 64
    assert "torch" in manifest["tools"] and "onnxruntime" in manifest["tools"]
    encoder = manifest["components"]["encoder"]
    assert encoder["parity"]["fp32"]["min_cosine"] >= FP32_GATE
    assert encoder["parity"]["fp16"]["min_cosine"] >= FP16_GATE
    assert encoder["files"] == {"fp32": "encoder.onnx", "fp16": "encoder.fp16.onnx"}
    for file in encoder["files"].values():
        assert (demo_repository / "demo" / file).is_file()


def test_onnx_has_dynamic_batch_and_matches_torch(demo_repository: Path):
    session = ort.InferenceSession(str(demo_repository / "demo" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    encoder = load_demo_model().encoder  # the shipped, trained weights
    for batch in (1, 3, 17):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 3, 64, 64)).astype(np.float32)
        pooled, tokens = session.run(["pooled", "tokens"], {"pixel_values": x})
        with torch.inference_mode():
            ref_pooled, ref_tokens = encoder(torch.from_numpy(x))
        assert pooled.shape == (batch, 128) and tokens.shape == (batch, 64, 64)
        assert row_cosines(ref_pooled.numpy(), pooled).min() > 0.99999
        np.testing.assert_allclose(tokens, ref_tokens.numpy(), atol=1e-4)


def test_fp16_copy_keeps_layernorm_in_fp32(demo_repository: Path):
    import onnx

    encoder = onnx.load(str(demo_repository / "demo" / "encoder.fp16.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in encoder.graph.initializer), "weights were not converted"
    model = onnx.load(str(demo_repository / "demo" / "predictor.fp16.onnx"))
    producer = {out: node for node in model.graph.node for out in node.output}
    kept = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax", "ReduceMean")]
    assert len(kept) == 1  # the predictor's input LayerNorm
    for node in kept:
        data = producer[node.input[0]]
        # every blocked op reads its data through a Cast to float32 (TensorProto.FLOAT == 1)
        assert data.op_type == "Cast" and data.attribute[0].i == onnx.TensorProto.FLOAT, node.name


def test_fp16_not_written_when_it_fails_its_gate(tmp_path: Path):
    target = export_demo(ExportOptions(out=tmp_path, fp16_gate=1.5), **quiet)
    manifest = json.loads((target / "manifest.json").read_text())
    assert "fp16" not in manifest["components"]["encoder"]["files"]
    assert manifest["components"]["encoder"]["parity"]["fp16"]["min_cosine"] < 1.5
    assert not (target / "encoder.fp16.onnx").exists()


def test_failed_fp32_gate_writes_no_entry(tmp_path: Path):
    with pytest.raises(ParityError):
        export_demo(ExportOptions(out=tmp_path, fp32_gate=1.5), **quiet)
    assert not (tmp_path / "demo").exists()
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_existing_entry_needs_force(tmp_path: Path):
    export_demo(ExportOptions(out=tmp_path, fp16=False), **quiet)
    with pytest.raises(FileExistsError):
        export_demo(ExportOptions(out=tmp_path, fp16=False), **quiet)
    export_demo(ExportOptions(out=tmp_path, fp16=False, force=True), **quiet)


def test_space_id_follows_the_weights(tmp_path: Path, demo_repository: Path):
    same = export_demo(ExportOptions(out=tmp_path / "a", fp16=False), **quiet)
    untrained = save_demo_model(build_demo_model(1), tmp_path / "init.safetensors")
    other = export_demo(ExportOptions(out=tmp_path / "b", fp16=False), weights=untrained, **quiet)
    ids = [json.loads((p / "manifest.json").read_text())["space_id"] for p in (demo_repository / "demo", same, other)]
    assert ids[0] == ids[1] != ids[2]


def test_compare_outputs_reports_the_worst_row():
    ref = {"y": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)}
    cand = {"y": np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)}
    report = compare_outputs(ref, cand)
    assert report.min_cosine == pytest.approx(1 / np.sqrt(2))
    assert report.max_abs_diff == pytest.approx(1.0)


def test_random_vit_export_for_benchmarks(tmp_path: Path):
    from export.cli import main

    code = main(["vit", "--name", "tiny", "--out", str(tmp_path), "--image-size", "32", "--patch-size", "8",
                 "--dim", "32", "--depth", "1", "--heads", "2", "--no-fp16"])
    assert code == 0
    manifest = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    assert manifest["family"] == "vit" and manifest["output"]["dim"] == 32 and manifest["output"]["token_grid"] == [4, 4]
    assert manifest["components"]["encoder"]["parity"]["fp32"]["min_cosine"] >= FP32_GATE
    assert main(["vit", "--name", "bad", "--out", str(tmp_path), "--image-size", "30", "--patch-size", "8"]) == 1
