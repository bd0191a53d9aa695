import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.demo import export_demo
from export.parity import compare_outputs, row_cosines, run_onnx
from export.pipeline import FP16_GATE, FP32_GATE, ExportOptions, ParityError
from models.demo import build_demo_model, load_demo_model, save_demo_model

quiet = {"log": lambda _: None}


def test_manifest_has_the_contract_fields(demo_repository: Path):
    manifest = json.loads((demo_repository / "demo" / "manifest.json").read_text())
    for key in (
        "name",
        "family",
        "checkpoint_sha256",
        "tools",
        "space_id",
        "input",
        "output",
        "components",
        "predictor",
    ):
        assert key in manifest, key
    assert manifest["input"]["image_size"] == [64, 64]
    assert manifest["input"]["layout"] == "NTCHW"
    assert manifest["input"]["frames_per_clip"] == 2
    assert manifest["predictor"]["context_frames"] == 2
    assert manifest["output"] == {"dim": 128, "token_grid": [8, 8], "token_dim": 64,
                                  "pooling": "linear_head_over_token_grid_batchnorm"}
    assert len(manifest["checkpoint_sha256"]) == 64
    assert "torch" in manifest["tools"]
    assert "onnxruntime" in manifest["tools"]
    encoder = manifest["components"]["encoder"]
    assert encoder["parity"]["fp32"]["min_cosine"] >= FP32_GATE
    assert encoder["parity"]["fp16"]["min_cosine"] >= FP16_GATE
    assert encoder["files"] == {"fp32": "encoder.onnx", "fp16": "encoder.fp16.onnx"}
    assert encoder["attention"] == {"fp32": "none", "fp16": "none"}  # a CNN: no attention to fuse
    for file in encoder["files"].values():
        assert (demo_repository / "demo" / file).is_file()


def test_onnx_has_dynamic_batch_and_matches_torch(demo_repository: Path):
    """The encoder takes uint8 pixels and normalises them itself: it equals PyTorch on the same pixels normalised."""
    session = ort.InferenceSession(str(demo_repository / "demo" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    model = load_demo_model()  # the shipped, trained weights
    mean = np.asarray(model.mean, np.float32).reshape(1, 1, 3, 1, 1)
    std = np.asarray(model.std, np.float32).reshape(1, 1, 3, 1, 1)
    for batch in (1, 3, 17):
        x = np.random.default_rng(batch).integers(0, 256, (batch, 2, 3, 64, 64), np.uint8)
        pooled, tokens = session.run(["pooled", "tokens"], {"pixel_values": x})
        with torch.inference_mode():
            ref_pooled, ref_tokens = model.encoder(torch.from_numpy((x / np.float32(255.0) - mean) / std))
        assert pooled.shape == (batch, 128)
        assert tokens.shape == (batch, 64, 64)
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
        assert data.op_type == "Cast", node.name
        assert data.attribute[0].i == onnx.TensorProto.FLOAT, node.name


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


def imagenet_normalised(pixels: np.ndarray) -> np.ndarray:
    """uint8 (B, 3, H, W) -> what the host used to feed: (pixel / 255 - mean) / std."""
    from export.pipeline import IMAGENET_MEAN, IMAGENET_STD

    mean, std = (np.asarray(v, np.float32).reshape(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (pixels / np.float32(255.0) - mean) / std


def test_a_uint8_graph_equals_the_float_graph_on_the_same_pixels(tmp_path: Path):
    """`jepa-export vit` writes a graph that takes uint8 pixels (the manifest says so); `--float-input` the graph the
    host normalises for. Same weights, same pixels: the same embeddings."""
    from export.cli import main

    args = ["--out", str(tmp_path), "--image-size", "32", "--patch-size", "8", "--dim", "32", "--depth", "1",
            "--heads", "2", "--no-fp16"]
    assert main(["vit", "--name", "u8", *args]) == 0
    assert main(["vit", "--name", "f32", "--float-input", *args]) == 0
    dtypes = {name: json.loads((tmp_path / name / "manifest.json").read_text())["input"]["dtype"]
              for name in ("u8", "f32")}
    assert dtypes == {"u8": "uint8", "f32": "float32"}
    x = np.random.default_rng(5).integers(0, 256, (4, 3, 32, 32), np.uint8)
    u8 = run_onnx(tmp_path / "u8" / "encoder.onnx", {"pixel_values": x})
    f32 = run_onnx(tmp_path / "f32" / "encoder.onnx", {"pixel_values": imagenet_normalised(x)})
    for output in ("pooled", "tokens"):
        assert row_cosines(f32[output], u8[output]).min() > 0.999999
        np.testing.assert_allclose(u8[output], f32[output], atol=1e-4)


def test_random_vit_export_for_benchmarks(tmp_path: Path):
    from export.cli import main

    code = main(["vit", "--name", "tiny", "--out", str(tmp_path), "--image-size", "32", "--patch-size", "8",
                 "--dim", "32", "--depth", "1", "--heads", "2", "--no-fp16"])
    assert code == 0
    manifest = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    assert (
        manifest["family"] == "vit"
    )
    assert (
        manifest["output"]["dim"] == 32
    )
    assert (
        manifest["output"]["token_grid"] == [4, 4]
    )
    assert manifest["components"]["encoder"]["parity"]["fp32"]["min_cosine"] >= FP32_GATE
    assert main(["vit", "--name", "bad", "--out", str(tmp_path), "--image-size", "30", "--patch-size", "8"]) == 1


def shared_layernorm_graph(path: Path) -> None:
    """x -> LayerNorm(w, b) -> MatMul -> Mul(w) -> LayerNorm(w, b) -> y: one weight initializer feeds two blocked
    ops and an fp16 one, as the exporter writes a random ViT whose equal constants it folded into one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.ones(8, np.float32), "norm.weight"),
        numpy_helper.from_array(np.zeros(8, np.float32), "norm.bias"),
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "proj.weight"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "norm.weight", "norm.bias"], ["h"], axis=-1, name="ln1"),
        helper.make_node("MatMul", ["h", "proj.weight"], ["mm"], name="mm"),
        helper.make_node("Mul", ["mm", "norm.weight"], ["m"], name="scale"),
        helper.make_node("LayerNormalization", ["m", "norm.weight", "norm.bias"], ["y"], axis=-1, name="ln2"),
    ]
    graph = helper.make_graph(
        nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], initializer=inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_fp16_conversion_of_an_initializer_shared_by_two_blocked_ops(tmp_path: Path):
    import onnx

    from export.onnx_graph import convert_fp16

    src, dst = tmp_path / "shared.onnx", tmp_path / "shared.fp16.onnx"
    shared_layernorm_graph(src)
    convert_fp16(src, dst)  # used to write two nodes named norm.weight_cast_to_fp32_node
    names = [node.name for node in onnx.load(str(dst)).graph.node]
    assert len(names) == len(set(names))
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert row_cosines(a, b).min() > 0.999
    assert not (tmp_path / "shared.unshared.onnx").exists()


def test_a_failing_fp16_conversion_is_a_failed_gate_not_a_failed_export(tmp_path: Path, monkeypatch):
    import export.pipeline

    def broken(src, dst):
        dst.write_bytes(b"half-written")
        raise ValueError("This is an invalid model. Error: two nodes with same node name (x_cast_to_fp32_node)")

    monkeypatch.setattr(export.pipeline, "convert_fp16", broken)
    target = export_demo(ExportOptions(out=tmp_path), **quiet)
    manifest = json.loads((target / "manifest.json").read_text())
    encoder = manifest["components"]["encoder"]
    assert encoder["files"] == {"fp32": "encoder.onnx"}
    assert "two nodes with same node name" in encoder["parity"]["fp16"]["error"]
    assert not (target / "encoder.fp16.onnx").exists()
    assert (target / "encoder.onnx").exists()


def test_blocked_ops_get_their_own_copy_of_a_shared_initializer(tmp_path: Path):
    """Whatever the converter version does with a shared initializer, each blocked use then casts its own."""
    import onnx

    from export.onnx_graph import unshare_blocked_initializers

    shared_layernorm_graph(tmp_path / "shared.onnx")
    model = onnx.load(str(tmp_path / "shared.onnx"))
    assert unshare_blocked_initializers(model) == 3  # ln1 and ln2 share weight and bias; Mul keeps the original
    blocked_inputs = [
        name for node in model.graph.node if node.op_type == "LayerNormalization" for name in node.input[1:]
    ]
    assert len(blocked_inputs) == len(set(blocked_inputs))
    onnx.checker.check_model(model)
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)
    before = ort.InferenceSession(str(tmp_path / "shared.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(before[0], after[0])


def test_vit_export_with_fusions_keeps_its_outputs(tmp_path: Path):
    """`jepa-export vit --fuse`: SkipLayerNormalization / BiasGelu kernels in place of the traced ops, and the
    served graph still equals PyTorch."""
    import onnx

    from export.cli import main

    assert main(["vit", "--name", "v", "--out", str(tmp_path), "--image-size", "32", "--patch-size", "8", "--dim", "32",
                 "--depth", "2", "--heads", "2", "--fuse"]) == 0
    folder = tmp_path / "v"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "fp32: fused" in manifest["fusion"]
    assert "fp16: fused" in manifest["fusion"]
    ops = {node.op_type for node in onnx.load(str(folder / "encoder.onnx")).graph.node}
    assert "SkipLayerNormalization" in ops
    assert "LayerNormalization" in ops
    assert not list(folder.glob("*.fused.onnx"))

    from models.vit import ViTConfig, ViTEncoder

    torch.manual_seed(0)
    reference = ViTEncoder(ViTConfig(image_size=32, patch_size=8, dim=32, depth=2, heads=2)).eval()
    x = np.random.default_rng(3).integers(0, 256, (3, 3, 32, 32), np.uint8)  # the graph normalises pixels itself
    with torch.inference_mode():
        expected = reference(torch.from_numpy(imagenet_normalised(x)))[1].numpy()
    for file in manifest["components"]["encoder"]["files"].values():
        got = run_onnx(folder / file, {"pixel_values": x})["tokens"]
        assert row_cosines(expected, got).min() > 0.999

