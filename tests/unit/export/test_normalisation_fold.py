"""The uint8 pixels' normalisation folded into the patch-embedding Conv (export/normalisation_fold.py), behind the
export's parity gates (export/pipeline.py): every family whose graph starts Cast -> Mul -> Add -> [layout] -> Conv
folds and computes what the unfolded graph computes; a Conv the fold would not be exact for is left alone; a
folded graph that fails its gate is a fallback, never a failed export."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import export.pipeline
from export.cli import main
from export.normalisation_fold import NotFoldable, fold_normalisation
from export.parity import run_onnx
from export.pipeline import FP16_GATE, FP32_GATE, IMAGENET_MEAN, IMAGENET_STD, ExportOptions, export_pixel_component
from models.demo.model import ClipEncoder, ClipEncoderConfig
from models.ijepa import IJepaConfig, IJepaEncoder
from models.vit import ViTConfig, ViTEncoder
from models.vjepa2 import VJepa2Config, VJepa2Encoder
from models.vjepa2_predictor import FuturePrediction, MaskPredictorConfig, VJepa2MaskPredictor

quiet = {"log": lambda _: None}


def _vjepa2() -> VJepa2Encoder:
    return VJepa2Encoder(VJepa2Config(image_size=32, patch_size=8, dim=48, depth=1, heads=2, mlp_hidden=96))


def pixel_family(name: str) -> tuple[torch.nn.Module, tuple[int, ...], str, tuple[str, ...]]:
    """A tiny random module of each family `PixelInput` wraps: the module, the shape of 4 probe items, the layout
    and the output names."""
    torch.manual_seed(0)
    if name == "vit":
        return ViTEncoder(ViTConfig(image_size=32, patch_size=8, dim=32, depth=1, heads=2)), (4, 3, 32, 32), "NCHW", (
            "pooled", "tokens")
    if name == "ijepa":
        module = IJepaEncoder(IJepaConfig(image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_hidden=64))
        return module, (4, 3, 32, 32), "NCHW", ("pooled", "tokens")
    if name == "vjepa2":  # a Conv3d tubelet embedding over (B, C, T, H, W)
        return _vjepa2(), (4, 3, 4, 32, 32), "NCTHW", ("pooled", "frames", "tokens")
    if name == "vjepa2_future":  # the encoder inside the future-prediction graph
        predictor = VJepa2MaskPredictor(MaskPredictorConfig(embed_dim=48, dim=32, depth=1, heads=2, mlp_hidden=64))
        return FuturePrediction(_vjepa2(), predictor, future_steps=1), (4, 3, 2, 32, 32), "NCTHW", (
            "predicted", "context_pooled")
    # the demo's clip encoder: (B, T, C, H, W) reshaped to (B, T*C, H, W) before its patchify Conv
    module = ClipEncoder(ClipEncoderConfig(image_size=16, frames=2, width=8, dim=16, patch=4))
    return module, (4, 2, 3, 16, 16), "NTCHW", ("pooled", "tokens")


def export_pixels(name: str, folder: Path, **options) -> tuple[dict, Path]:
    """The family's module through the export pipeline with ImageNet mean / std (different per channel, so a
    channel laid out wrongly through the demo's Reshape shows)."""
    module, shape, layout, outputs = pixel_family(name)
    probes = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    spec = export_pixel_component(module.eval(), probes, outputs, folder, "encoder", ExportOptions(**options), **quiet,
                                  mean=IMAGENET_MEAN, std=IMAGENET_STD, layout=layout)
    return spec.model_dump(), folder / "encoder.onnx"


def ops_from_pixels_to_conv(path: Path) -> list[str]:
    """The operators the pixels pass through from the graph input to the first Conv (following the one consumer
    of each value; the Shape of the input that V-JEPA 2's future graph takes aside)."""
    graph = onnx.load(str(path)).graph
    value, ops = graph.input[0].name, []
    while not ops or ops[-1] != "Conv":
        (node,) = [n for n in graph.node if value in n.input and n.op_type != "Shape"]
        ops.append(node.op_type)
        value = node.output[0]
    return ops


FAMILIES = ("vit", "ijepa", "vjepa2", "vjepa2_future", "demo")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_pixel_family_folds_and_computes_what_the_unfolded_graph_computes(tmp_path: Path, name: str):
    unfolded, unfolded_path = export_pixels(name, tmp_path / "unfolded", fold_normalisation=False, fp16=False)
    folded, folded_path = export_pixels(name, tmp_path / "folded")
    assert unfolded["normalisation"] == {"fp32": "unfolded"}
    assert folded["normalisation"] == {"fp32": "folded", "fp16": "folded"}
    assert "normalisation_fallback" not in folded["parity"] | unfolded["parity"]
    assert folded["parity"]["fp32"]["min_cosine"] >= FP32_GATE
    assert folded["parity"]["fp16"]["min_cosine"] >= FP16_GATE
    layout = ["Reshape"] if name == "demo" else []
    assert ops_from_pixels_to_conv(unfolded_path) == ["Cast", "Mul", "Add", *layout, "Conv"]
    assert ops_from_pixels_to_conv(folded_path) == ["Cast", *layout, "Conv"]  # the Cast stays: the input is uint8
    assert sorted(p.name for p in folded_path.parent.iterdir()) == ["encoder.fp16.onnx", "encoder.onnx"]
    # fresh pixels, another batch size: the same outputs to float32 rounding
    shape = pixel_family(name)[1][1:]
    pixels = np.random.default_rng(11).integers(0, 256, (3, *shape), np.uint8)
    before, after = run_onnx(unfolded_path, {"pixel_values": pixels}), run_onnx(folded_path, {"pixel_values": pixels})
    for output, expected in before.items():
        assert np.abs(after[output] - expected).max() <= 1e-5 * np.abs(expected).max(), output


def pixel_graph(path: Path, *, item: tuple[int, ...] = (3, 8, 8), scale_shape: tuple[int, ...] = (1, 3, 1, 1),
                layout: tuple[onnx.NodeProto, ...] = (), kernel: tuple[int, ...] = (4, 4),
                in_channels: int = 3, reshape_to: tuple[int, ...] = (), **conv_attributes) -> None:
    """uint8 pixels -> Cast -> Mul(scale) -> Add(offset) -> [layout] -> Conv -> y, as `PixelInput` exports it;
    `reshape_to`: the layout is a Reshape to that shape."""
    if reshape_to:
        layout = (helper.make_node("Reshape", ["normalised", "shape"], ["reshaped"], name="reshape"),)
    rng = np.random.default_rng(0)
    scale = (rng.random(scale_shape) * 0.02 + 0.01).astype(np.float32)
    offset = (-rng.random(scale_shape) * 2).astype(np.float32)
    groups = conv_attributes.get("group", 1)
    weight = rng.standard_normal((6, in_channels // groups, *kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(offset, "offset"),
             numpy_helper.from_array(weight, "w"), numpy_helper.from_array(rng.standard_normal(6, np.float32), "b"),
             numpy_helper.from_array(np.asarray(reshape_to, np.int64), "shape")]
    conv_in = layout[-1].output[0] if layout else "normalised"
    nodes = [
        helper.make_node("Cast", ["pixels"], ["cast"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["cast", "scale"], ["scaled"], name="mul"),
        helper.make_node("Add", ["scaled", "offset"], ["normalised"], name="add"),
        *layout,
        helper.make_node("Conv", [conv_in, "w", "b"], ["y"], kernel_shape=list(kernel), strides=list(kernel),
                         name="conv", **conv_attributes),
    ]
    output = ["batch", 6, *(f"out{axis}" for axis in range(len(kernel)))]
    graph = helper.make_graph(nodes, "pixels", [helper.make_tensor_value_info("pixels", TensorProto.UINT8,
                                                                              ["batch", *item])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output)], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


@pytest.mark.parametrize(("case", "attributes", "reason"), [
    ("padded", {"pads": [1, 1, 1, 1]}, "pads its input"),
    ("same padding", {"auto_pad": "SAME_UPPER"}, "pads its input"),
    ("grouped", {"group": 3, "in_channels": 3}, "3 groups"),
    ("dilated", {"dilations": [2, 2]}, "dilated"),
    ("a scale per pixel", {"scale_shape": (1, 3, 8, 8)}, "not one value per input channel"),
    # frames folded into the batch, each with its own scale: every row of the Conv's input must agree
    ("a scale per frame", {"item": (2, 3, 8, 8), "scale_shape": (1, 2, 3, 1, 1), "reshape_to": (-1, 3, 8, 8)},
     "not one value per input channel"),
    ("a Reshape of the batch", {"reshape_to": (1, -1, 8, 8)}, "does not keep a dynamic batch in front"),
])
def test_a_conv_the_fold_would_not_be_exact_for_is_left_alone(tmp_path: Path, case: str, attributes: dict,
                                                                reason: str):
    src, dst = tmp_path / "graph.onnx", tmp_path / "graph.folded.onnx"
    pixel_graph(src, **attributes)
    before = src.read_bytes()
    with pytest.raises(NotFoldable, match=reason):
        fold_normalisation(src, dst)
    assert not dst.exists()
    assert src.read_bytes() == before


def test_a_transpose_between_the_normalisation_and_the_conv_carries_the_channels(tmp_path: Path):
    """(B, T, C, H, W) pixels transposed to (B, C, T, H, W) for a tubelet Conv3d: each channel keeps its constants."""
    src, dst = tmp_path / "graph.onnx", tmp_path / "graph.folded.onnx"
    transpose = helper.make_node("Transpose", ["normalised"], ["clip"], perm=[0, 2, 1, 3, 4], name="transpose")
    pixel_graph(src, item=(2, 3, 8, 8), scale_shape=(1, 1, 3, 1, 1), layout=(transpose,), kernel=(2, 4, 4))
    fold = fold_normalisation(src, dst)
    assert fold.layout == ("Transpose",)
    assert [n.op_type for n in onnx.load(str(dst)).graph.node] == ["Cast", "Transpose", "Conv"]
    pixels = np.random.default_rng(1).integers(0, 256, (5, 2, 3, 8, 8), np.uint8)
    before, after = run_onnx(src, {"pixels": pixels})["y"], run_onnx(dst, {"pixels": pixels})["y"]
    assert np.abs(after - before).max() <= 1e-5 * np.abs(before).max()


class PaddedStem(torch.nn.Module):
    """A CNN whose first Conv pads its input: the fold would change the border, so the export must not fold it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.conv(pixel_values).mean(dim=(2, 3))


def test_a_padded_first_conv_keeps_its_normalisation_and_the_manifest_says_why(tmp_path: Path):
    probes = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    spec = export_pixel_component(PaddedStem().eval(), probes, ("pooled",), tmp_path, "encoder", ExportOptions(),
                                  **quiet, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="NCHW")
    assert spec.normalisation == {"fp32": "unfolded", "fp16": "unfolded"}
    assert "pads its input" in spec.parity["normalisation_fallback"]["fp32"]
    assert ops_from_pixels_to_conv(tmp_path / "encoder.onnx") == ["Cast", "Mul", "Add", "Conv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.fp16.onnx", "encoder.onnx"]


def test_a_folded_graph_that_fails_the_fp32_gate_keeps_the_unfolded_graph(tmp_path: Path, monkeypatch):
    """The fold is made to go wrong (its bias doubled): the export still succeeds, with the unfolded graph."""
    fold = export.pipeline.fold_normalisation

    def wrong_bias(src: Path, dst: Path):
        done = fold(src, dst)
        model = onnx.load(str(dst))
        for tensor in model.graph.initializer:
            if tensor.name.endswith("bias.folded"):
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 2 + 1, tensor.name))
        onnx.save(model, str(dst))
        return done

    monkeypatch.setattr(export.pipeline, "fold_normalisation", wrong_bias)
    spec, path = export_pixels("vit", tmp_path)
    assert spec["normalisation"] == {"fp32": "unfolded", "fp16": "unfolded"}
    assert spec["parity"]["normalisation_fallback"]["fp32"].startswith("min cosine")
    assert spec["parity"]["fp32"]["min_cosine"] >= FP32_GATE
    assert ops_from_pixels_to_conv(path) == ["Cast", "Mul", "Add", "Conv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.fp16.onnx", "encoder.onnx"]


def _no_mul(path: Path) -> bool:
    return "Mul" not in ops_from_pixels_to_conv(path)


@pytest.mark.parametrize(("refuses", "attention", "normalisation"), [
    ("folded", "mha", "unfolded"),  # the fp16 copy of the unfolded graph, same attention
    ("mha", "unfused", "folded"),  # the unfused graph traced again is folded as the fp32 graph is
    ("both", "unfused", "unfolded"),
])
def test_an_fp16_copy_that_fails_falls_back_graph_by_graph(tmp_path: Path, monkeypatch, refuses: str,
                                                           attention: str, normalisation: str):
    convert = export.pipeline.convert_fp16

    def refusing(src: Path, dst: Path) -> None:
        if refuses in ("folded", "both") and _no_mul(src):
            raise ValueError("cannot convert a folded graph")
        if refuses in ("mha", "both") and "MultiHeadAttention" in {n.op_type for n in onnx.load(str(src)).graph.node}:
            raise ValueError("cannot convert MultiHeadAttention")
        convert(src, dst)

    monkeypatch.setattr(export.pipeline, "convert_fp16", refusing)
    spec, path = export_pixels("ijepa", tmp_path)
    assert spec["attention"] == {"fp32": "mha", "fp16": attention}
    assert spec["normalisation"] == {"fp32": "folded", "fp16": normalisation}
    assert spec["parity"]["fp16"]["kept"]
    assert _no_mul(path)
    assert _no_mul(tmp_path / "encoder.fp16.onnx") == (normalisation == "folded")
    fallback = spec["parity"].get("normalisation_fallback", {})
    assert list(fallback) == ([] if normalisation == "folded" else ["fp16"])
    assert all("cannot convert a folded graph" in reason for reason in fallback.values())
    attention_fallback = spec["parity"].get("attention_fallback", {})
    assert list(attention_fallback) == (["fp16"] if attention == "unfused" else [])
    assert all("cannot convert MultiHeadAttention" in reason for reason in attention_fallback.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.fp16.onnx", "encoder.onnx"]


def test_the_manifest_says_whether_the_normalisation_is_folded(tmp_path: Path):
    args = ["--out", str(tmp_path), "--image-size", "32", "--patch-size", "8", "--dim", "32", "--depth", "1",
            "--heads", "2", "--no-fp16"]
    assert main(["vit", "--name", "folded", *args]) == 0
    assert main(["vit", "--name", "unfolded", "--no-fold", *args]) == 0
    assert main(["vit", "--name", "float", "--float-input", *args]) == 0
    encoders = {name: json.loads((tmp_path / name / "manifest.json").read_text())["components"]["encoder"]
                for name in ("folded", "unfolded", "float")}
    assert encoders["folded"]["normalisation"] == {"fp32": "folded"}
    assert encoders["unfolded"]["normalisation"] == {"fp32": "unfolded"}
    assert "normalisation" not in encoders["float"]  # the host normalises: nothing in the graph to fold
    from service.repository import read_entry

    assert read_entry(tmp_path / "folded").manifest.components["encoder"].normalisation == {"fp32": "folded"}
    pixels = np.random.default_rng(4).integers(0, 256, (2, 3, 32, 32), np.uint8)
    folded, unfolded = (run_onnx(tmp_path / name / "encoder.onnx", {"pixel_values": pixels})["tokens"]
                        for name in ("folded", "unfolded"))
    assert np.abs(folded - unfolded).max() <= 1e-5 * np.abs(unfolded).max()


def test_fusions_leave_an_fp16_graph_alone_whose_normalisation_is_not_the_fp32_graphs(tmp_path: Path):
    """`--fuse` makes each fused copy from the fp32 graph: a folded copy would replace an unfolded fp16 graph and the
    manifest would no longer say what the graph is."""
    from export.fusion import fuse_entry

    assert main(["vit", "--name", "v", "--out", str(tmp_path), "--image-size", "32", "--patch-size", "8", "--dim",
                 "32", "--depth", "1", "--heads", "2"]) == 0
    entry = tmp_path / "v"
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["components"]["encoder"]["normalisation"]["fp16"] = "unfolded"  # as after an fp16 fold fallback
    (entry / "manifest.json").write_text(json.dumps(manifest))
    summary = fuse_entry(entry, **quiet)
    assert "fp16: not fused (its normalisation, unfolded, is not the fp32 graph's)" in summary
    assert "fp32: fused" in summary
