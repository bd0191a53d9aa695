"""Tracing PyTorch modules to ONNX with a dynamic batch axis, and the fp16 copy."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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
) -> None:
    """Trace `module` with the dynamo exporter; axis 0 of every input is a dynamic batch."""
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
            verbose=False,
        )
    onnx.checker.check_model(str(path))  # given a path, the checker also handles external data


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and kernels, float32 inputs/outputs, FP32_OPS kept in fp32.

    ONNX Runtime's converter is used because onnxconverter-common writes an
    invalid graph when a blocked op (the pooled ReduceMean) feeds a graph output.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Given a path (not a loaded ModelProto) the converter infers shapes file to file, which also works
        # past the 2 GiB protobuf limit (ViT-H/g with external data); in memory it would fail there.
        converted = convert_float_to_float16(str(src), keep_io_types=True, op_block_list=list(FP32_OPS))
    size = sum(t.ByteSize() for t in converted.graph.initializer)
    if needs_external_data(size):
        onnx.save(converted, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=external_data_file(dst).name)
    else:
        onnx.save(converted, str(dst))
