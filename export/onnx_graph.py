"""Tracing PyTorch modules to ONNX with a dynamic batch axis, and the fp16 copy."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import onnx
import torch

# LayerNorm and softmax overflow or lose too much in fp16 (their sums of squares and exponentials);
# the pooled mean is a reduction over many tokens, so it stays fp32 too.
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean")
MAX_BATCH = 4096
# A protobuf file cannot exceed 2 GiB: larger models (ViT-H, ViT-g encoders) keep their weights in
# `<file>.data` beside the graph, which ONNX Runtime finds by itself.
EXTERNAL_DATA_BYTES = 1 << 30


def needs_external_data(num_bytes: int) -> bool:
    return num_bytes > EXTERNAL_DATA_BYTES


def external_data_file(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int | None = None,
    translations: Mapping[Callable, Callable] | None = None,
) -> None:
    """Trace `module` with the dynamo exporter; axis 0 of every input is a dynamic batch. `opset` (None: the
    exporter's default) and `translations` (ONNX functions for custom torch ops) are for the fused attention."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic_shapes = {name: {0: batch} for name in input_names}
    path.parent.mkdir(parents=True, exist_ok=True)
    weight_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            example_inputs,
            str(path),
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            external_data=needs_external_data(weight_bytes),
            opset_version=opset,
            custom_translation_table=dict(translations) if translations else None,
            verbose=False,
        )
    onnx.checker.check_model(str(path))  # given a path, the checker also handles external data


def unshare_blocked_initializers(model: onnx.ModelProto, blocked: Sequence[str] = FP32_OPS) -> int:
    """Give every blocked-op use of a shared initializer its own copy; returns how many copies were made.

    The exporter folds equal constants into one initializer (a random ViT's LayerNorm weights are all ones,
    so every block shares `blocks.0.norm1.weight`). The fp16 converter then inserts one Cast to fp32 per
    use, all with the same node name: an invalid graph. Copies of the initializer avoid that; with
    external data a copy points at the same bytes on disk, so nothing is duplicated there.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in initializers:
                uses[name] = uses.get(name, 0) + 1
    copies = 0
    for index, node in enumerate(model.graph.node):
        if node.op_type not in blocked:
            continue
        for position, name in enumerate(node.input):
            if uses.get(name, 0) > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}__use{index}_{position}"
                model.graph.initializer.append(copy)
                node.input[position] = copy.name
                uses[name] -= 1
                copies += 1
    return copies


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and kernels, float32 inputs/outputs, FP32_OPS kept in fp32.

    Inputs stay float32 although the first op casts them to fp16 on the device: fp16 pixels would halve the
    bytes over PCIe, but numpy's float32 -> float16 conversion costs about 50 times a float32 copy per image
    (`python -m loadtests.bench_preprocess`), and the batch is assembled on the host.

    ONNX Runtime's converter is used because onnxconverter-common writes an
    invalid graph when a blocked op (the pooled ReduceMean) feeds a graph output.
    Raises on any failure; the caller's parity check loads the result in ONNX Runtime (which refuses an
    invalid graph) and treats either as a failed fp16 gate.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src), load_external_data=False)
    staged = src
    if unshare_blocked_initializers(model):
        # beside the source, so relative external-data locations still resolve
        staged = src.with_name(src.stem + ".unshared.onnx")
        onnx.save(model, str(staged))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Given a path (not a loaded ModelProto) the converter infers shapes file to file, which also works
            # past the 2 GiB protobuf limit (ViT-H/g with external data); in memory it would fail there.
            converted = convert_float_to_float16(str(staged), keep_io_types=True, op_block_list=list(FP32_OPS))
    finally:
        if staged != src:
            staged.unlink(missing_ok=True)
    size = sum(t.ByteSize() for t in converted.graph.initializer)
    if needs_external_data(size):
        onnx.save(converted, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=external_data_file(dst).name)
    else:
        onnx.save(converted, str(dst))
