"""Attention as one fused operator in every exported transformer, behind the parity gate (export/attention.py).

The families' own tests (test_export_families.py, test_export.py) export with the default (mha) and compare with
transformers / Meta's code; here every family's module goes through the pipeline with each fused operator, fp32
and fp16 gated against PyTorch on the CPU provider, and a fused graph that ONNX Runtime refuses is a failed gate."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import export.attention
import export.pipeline
from export.attention import attention_ops
from export.cli import main
from export.parity import row_cosines, run_onnx
from export.pipeline import FP16_GATE, FP32_GATE, ExportOptions, export_component
from models.ac_predictor import ACPredictorConfig, VJepa2ACPredictor
from models.ijepa import IJepaConfig, IJepaEncoder
from models.vit import ViTConfig, ViTEncoder
from models.vjepa2 import VJepa2Config, VJepa2Encoder
from models.vjepa2_predictor import FuturePrediction, MaskPredictorConfig, VJepa2MaskPredictor

quiet = {"log": lambda _: None}


def _vjepa2() -> VJepa2Encoder:
    return VJepa2Encoder(VJepa2Config(image_size=32, patch_size=8, dim=48, depth=2, heads=2, mlp_hidden=96))


def family(name: str) -> tuple[torch.nn.Module, dict[str, np.ndarray], tuple[str, ...], int]:
    """A tiny random module of each family, its probe feeds, output names and attention layers."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if name == "vit":
        module = ViTEncoder(ViTConfig(image_size=32, patch_size=8, dim=32, depth=2, heads=2))
        return module, {"pixel_values": rng.standard_normal((4, 3, 32, 32), np.float32)}, ("pooled", "tokens"), 2
    if name == "ijepa":
        module = IJepaEncoder(IJepaConfig(image_size=32, patch_size=8, dim=32, depth=2, heads=2, mlp_hidden=64))
        return module, {"pixel_values": rng.standard_normal((4, 3, 32, 32), np.float32)}, ("pooled", "tokens"), 2
    if name == "vjepa2":  # 3-D rotary positions on q and k before the fused operator
        feeds = {"pixel_values": rng.standard_normal((4, 3, 4, 32, 32), np.float32)}
        return _vjepa2(), feeds, ("pooled", "frames", "tokens"), 2
    if name == "vjepa2_future":  # the encoder on the context, then the mask predictor: rotary positions in both
        predictor = VJepa2MaskPredictor(MaskPredictorConfig(embed_dim=48, dim=32, depth=2, heads=2, mlp_hidden=64))
        module = FuturePrediction(_vjepa2(), predictor, future_steps=1)
        feeds = {"pixel_values": rng.standard_normal((4, 3, 2, 32, 32), np.float32)}
        return module, feeds, ("predicted", "context_pooled"), 4
    # V-JEPA 2-AC's predictor: rotary positions and the block-causal mask
    module = VJepa2ACPredictor(ACPredictorConfig(image_size=32, patch_size=8, embed_dim=48, dim=32, depth=2, heads=2,
                                                 mlp_hidden=64))
    feeds = {"context": rng.standard_normal((4, 32, 48), np.float32),
             "actions": rng.uniform(-0.05, 0.05, (4, 2, 7)).astype(np.float32),
             "states": rng.normal(0, 0.3, (4, 2, 7)).astype(np.float32)}
    return module, feeds, ("predicted",), 2


def torch_outputs(module: torch.nn.Module, feeds: dict[str, np.ndarray], names: tuple[str, ...]) -> dict:
    with torch.inference_mode():
        out = module(*(torch.from_numpy(v) for v in feeds.values()))
    return dict(zip(names, (out,) if isinstance(out, torch.Tensor) else out, strict=True))


# Every family with the ONNX operator; MultiHeadAttention (the default, which the families' own tests export and
# compare with the reference code) where rotary positions and the mask are rewritten with it, fp16 included.
CASES = [(name, "onnx") for name in ("vit", "ijepa", "vjepa2", "vjepa2_future", "vjepa2_ac")] + [
    ("vjepa2_future", "mha"), ("vjepa2_ac", "mha")]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_every_family_exports_one_fused_operator_per_layer_within_the_gates(tmp_path: Path, name: str, kind: str):
    module, feeds, outputs, layers = family(name)
    module.eval()
    spec = export_component(module, feeds, outputs, tmp_path, "graph", ExportOptions(attention=kind), **quiet)
    assert spec.attention == {"fp32": kind, "fp16": kind}
    assert spec.files == {"fp32": "graph.onnx", "fp16": "graph.fp16.onnx"}
    assert "attention_fallback" not in spec.parity
    fused = "MultiHeadAttention" if kind == "mha" else "Attention"
    for file in spec.files.values():
        assert attention_ops(tmp_path / file) == {fused: layers}, file  # no Softmax left: no unfused attention
    assert spec.parity["fp32"]["min_cosine"] >= FP32_GATE
    assert spec.parity["fp16"]["min_cosine"] >= FP16_GATE
    # the gate's own probes aside: fresh inputs, another batch size, both precisions, on the CPU provider
    fresh = {k: np.random.default_rng(9).permutation(v[:3]) + np.float32(0.01) for k, v in feeds.items()}
    expected = torch_outputs(module, fresh, outputs)
    for precision, gate in (("fp32", 0.9999), ("fp16", 0.999)):
        got = run_onnx(tmp_path / spec.files[precision], fresh)
        for output in outputs:
            assert row_cosines(expected[output].numpy(), got[output]).min() >= gate, (precision, output)
    if kind == "mha":  # the benchmark's rewrite back to the ONNX operator (mask included) computes the same
        rewritten = tmp_path / "graph.attn-onnx.onnx"
        shutil.copyfile(tmp_path / "graph.onnx", rewritten)
        assert export.attention.to_onnx_attention(rewritten) == layers
        assert attention_ops(rewritten) == {"Attention": layers}
        before, after = run_onnx(tmp_path / "graph.onnx", fresh), run_onnx(rewritten, fresh)
        for output in outputs:
            np.testing.assert_allclose(after[output], before[output], rtol=1e-4, atol=1e-5)


def test_the_unfused_choice_keeps_matmul_softmax_attention(tmp_path: Path):
    module, feeds, outputs, layers = family("vjepa2_ac")
    spec = export_component(module.eval(), feeds, outputs, tmp_path, "graph",
                            ExportOptions(attention="unfused", fp16=False), **quiet)
    assert spec.attention == {"fp32": "unfused"}
    assert attention_ops(tmp_path / "graph.onnx") == {"Softmax": layers}


def test_a_fused_graph_onnx_runtime_cannot_run_is_a_failed_gate_and_the_unfused_graph_is_kept(tmp_path, monkeypatch):
    """The rewrite is made to name an operator ONNX Runtime does not have: the export still succeeds."""
    rewrite = export.attention.to_multihead_attention

    def unknown_operator(path: Path) -> int:
        count = rewrite(path)
        model = onnx.load(str(path))
        for node in model.graph.node:
            if node.op_type == "MultiHeadAttention":
                node.op_type = "MultiHeadAttentionV9"
        onnx.save(model, str(path))
        return count

    monkeypatch.setattr(export.attention, "to_multihead_attention", unknown_operator)
    module, feeds, outputs, layers = family("vit")
    spec = export_component(module.eval(), feeds, outputs, tmp_path, "encoder",
                            ExportOptions(attention="mha", fp16=False), **quiet)
    assert spec.attention == {"fp32": "unfused"}
    assert "MultiHeadAttentionV9" in spec.parity["attention_fallback"]["fp32"]
    assert spec.parity["fp32"]["min_cosine"] >= FP32_GATE
    assert attention_ops(tmp_path / "encoder.onnx") == {"Softmax": layers}
    assert [p.name for p in tmp_path.iterdir()] == ["encoder.onnx"]


def test_an_fp16_fused_graph_that_fails_keeps_the_fused_fp32_and_an_unfused_fp16(tmp_path, monkeypatch):
    convert = export.pipeline.convert_fp16

    def no_fp16_attention(src: Path, dst: Path) -> None:  # a converter that cannot handle the fused operator
        if attention_ops(src)["MultiHeadAttention"]:
            raise ValueError("cannot convert MultiHeadAttention to float16")
        convert(src, dst)

    monkeypatch.setattr(export.pipeline, "convert_fp16", no_fp16_attention)
    module, feeds, outputs, layers = family("ijepa")
    spec = export_component(module.eval(), feeds, outputs, tmp_path, "encoder", ExportOptions(), **quiet)
    assert spec.attention == {"fp32": "mha", "fp16": "unfused"}
    assert "cannot convert MultiHeadAttention" in spec.parity["attention_fallback"]["fp16"]
    assert spec.parity["fp16"]["kept"]
    assert spec.parity["fp16"]["min_cosine"] >= FP16_GATE
    assert attention_ops(tmp_path / "encoder.onnx") == {"MultiHeadAttention": layers}
    assert attention_ops(tmp_path / "encoder.fp16.onnx") == {"Softmax": layers}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.fp16.onnx", "encoder.onnx"]


def test_the_manifest_says_which_attention_each_graph_has(tmp_path: Path):
    assert main(["vit", "--name", "v", "--out", str(tmp_path), "--image-size", "32", "--patch-size", "8", "--dim",
                 "32", "--depth", "2", "--heads", "2", "--attention", "onnx", "--no-fp16"]) == 0
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert manifest["components"]["encoder"]["attention"] == {"fp32": "onnx"}
    from service.repository import read_entry

    assert read_entry(tmp_path / "v").manifest.components["encoder"].attention == {"fp32": "onnx"}
