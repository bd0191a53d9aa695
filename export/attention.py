"""Attention as one fused operator in the exported graphs.

Which operator (`ExportOptions.attention`, `jepa-export ... --attention`):
- `mha` (the default): ONNX Runtime's `com.microsoft.MultiHeadAttention`. Its CUDA kernel has had Flash
  Attention v2 for fp16 since onnxruntime 1.16 (and cutlass memory-efficient attention where a mask rules Flash
  out), and it is the operator ONNX Runtime's own transformer optimiser fuses BERT and ViT attention into, so it is
  the path its CUDA provider has tuned longest; every onnxruntime-gpu build in use runs it fused.
- `onnx`: the standard ONNX `Attention` operator (opset 23). Portable to other runtimes; ONNX Runtime's CUDA
  provider dispatches it to Flash / memory-efficient kernels only since onnxruntime pull request 27542 (2026), and
  ran it unfused before. Kept so a GPU run can measure both (loadtests/bench_gpu.py).
- `unfused`: MatMul + Softmax + MatMul, the graph of earlier exports.
Both fused operators also run on the CPU provider in fp32 and fp16, which is where the export's parity gate runs.

How: every attention layer is switched to `torch.ops.jepa.attention` (models/fused_attention.py) and the dynamo
exporter translates that op to `Attention` with 3-D (B, N, heads * hs) inputs at opset 23; for `mha` each of
those nodes is then rewritten one for one into `MultiHeadAttention` (same q, k, v; the additive mask becomes its
attention bias). Rotary positions (V-JEPA 2, 2-AC, the mask predictor) are applied to q and k before the op.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from export.onnx_graph import export_onnx
from models.jepa_blocks import use_fused_attention

FUSED_KINDS = ("mha", "onnx")
ATTENTION_KINDS = (*FUSED_KINDS, "unfused")
DEFAULT_ATTENTION = "mha"
FUSED_OPSET = 23  # the first opset with the Attention operator
MS_DOMAIN = "com.microsoft"


def _onnx_attention(q, k, v, heads: int, bias=None):
    """torch.ops.jepa.attention -> ONNX Attention (opset 23) on 3-D inputs; its optional outputs are left unused."""
    from onnxscript import opset23

    y, _, _, _ = opset23.Attention(q, k, v, bias, q_num_heads=heads, kv_num_heads=heads)
    return y


def translation_table() -> dict[Callable, Callable]:
    return {torch.ops.jepa.attention.default: _onnx_attention}


def attention_layers(module: torch.nn.Module) -> int:
    """How many attention layers a model has (0: its graph has no attention to fuse)."""
    return use_fused_attention(module, False)


def trace_graph(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, input_names: Sequence[str],
                output_names: Sequence[str], kind: str) -> None:
    """Trace `module` to `path` with the attention of `kind` (mha, onnx or unfused)."""
    if kind not in FUSED_KINDS:
        export_onnx(module, example, path, input_names, output_names)
        return
    use_fused_attention(module, True)
    try:
        export_onnx(module, example, path, input_names, output_names, opset=FUSED_OPSET,
                    translations=translation_table())
    finally:
        use_fused_attention(module, False)
    if kind == "mha":
        to_multihead_attention(path)


def to_multihead_attention(path: Path) -> int:
    """Rewrite every ONNX Attention node of the graph at `path` into com.microsoft.MultiHeadAttention (in place);
    returns how many. Weights in an external-data file stay where they are."""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Attention" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        if any(node.output[1:]):
            raise ValueError(f"{node.name}: an Attention node with key/value cache outputs has no "
                             "MultiHeadAttention form")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        name = node.name or f"attention_{rewritten}"
        inputs = list(node.input[:3])
        if len(node.input) > 3 and node.input[3]:
            # the mask (N, N) -> attention bias (1, 1, N, N): MultiHeadAttention broadcasts only that form
            axes, bias = f"{name}_bias_axes", f"{name}_bias"
            graph.initializer.append(numpy_helper.from_array(np.asarray([0, 1], np.int64), axes))
            nodes.append(helper.make_node("Unsqueeze", [node.input[3], axes], [bias], name=f"{name}_bias_unsqueeze"))
            inputs += ["", "", bias]  # (bias of the projections, key padding mask, attention bias)
        nodes.append(helper.make_node(
            "MultiHeadAttention", inputs, [node.output[0]], name=name, domain=MS_DOMAIN,
            num_heads=int(attrs["q_num_heads"]), **({"scale": float(attrs["scale"])} if "scale" in attrs else {})))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    if rewritten and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(path))
    return rewritten


def to_onnx_attention(path: Path) -> int:
    """The inverse rewrite: every com.microsoft.MultiHeadAttention node of a graph this module wrote back into
    ONNX Attention (in place; the graph is opset 23 already); returns how many. The benchmark uses it to measure
    both operators on one exported entry without tracing it twice."""
    model = onnx.load(str(path), load_external_data=False)
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "MultiHeadAttention" or node.domain != MS_DOMAIN:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        bias = node.input[5] if len(node.input) > 5 else ""  # (1, 1, N, N) broadcasts as an Attention mask too
        replacement = helper.make_node(
            "Attention", [*node.input[:3], *([bias] if bias else [])], [node.output[0]], name=node.name,
            q_num_heads=int(attrs["num_heads"]), kv_num_heads=int(attrs["num_heads"]),
            **({"scale": float(attrs["scale"])} if "scale" in attrs else {}))
        node.CopyFrom(replacement)
        rewritten += 1
    onnx.save(model, str(path))
    return rewritten


def attention_ops(path: Path) -> Counter:
    """Attention-related operators of a graph: fused ones by their name, Softmax for unfused attention."""
    model = onnx.load(str(path), load_external_data=False)
    names = {"Attention", "MultiHeadAttention", "Softmax"}
    return Counter(node.op_type for node in model.graph.node if node.op_type in names)
