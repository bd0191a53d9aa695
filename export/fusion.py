"""ONNX Runtime's transformer fusions on an exported ViT encoder, behind a parity gate.

`onnxruntime.transformers.optimizer` rewrites the exported graph: LayerNorm after a residual Add becomes
one SkipLayerNormalization kernel and Linear + GELU one BiasGelu (24 and 12 of them in a ViT-S/16). The
optimiser does not recognise our packed-qkv attention; the export fuses that itself (export/attention.py), and
these fusions leave the fused operator as it is. A fused graph is kept only if its outputs match the
graph before on probe images to the gate of its precision; otherwise that graph stays and the report says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export.onnx_graph import FP32_OPS
from export.parity import compare_outputs, run_onnx

FP32_GATE = 0.99999
FP16_GATE = 0.999


def fused_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".onnx") + ".fused.onnx")


def fuse_graph(src_fp32: Path, dst: Path, heads: int, dim: int, fp16: bool) -> dict[str, int]:
    """Optimise the fp32 graph (then convert to fp16 with the same blocked ops as the export); returns the
    count of each fused operator."""
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(str(src_fp32), model_type="vit", num_heads=heads, hidden_size=dim, opt_level=0)
    if fp16:
        model.convert_float_to_float16(keep_io_types=True, op_block_list=list(FP32_OPS))
    model.save_model_to_file(str(dst))
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}


def fuse_entry(
    folder: Path, use_gpu: bool = False, replace: bool = False, log: Callable[[str], None] = print
) -> str:
    """Write a fused copy of each encoder graph of a ViT entry (`encoder.fused.onnx`, `encoder.fp16.fused.onnx`),
    or with `replace` put it in place of the unfused file; returns a one-line summary for reports."""
    manifest = json.loads((folder / "manifest.json").read_text())
    encoder = manifest["components"]["encoder"]
    heads = int(manifest.get("architecture", {}).get("heads", 0)) or infer_heads(manifest)
    dim = int(manifest["output"]["dim"])
    shape = encoder["inputs"]["pixel_values"][1:]
    rng = np.random.default_rng(7)
    uint8 = manifest["input"].get("dtype", "float32") == "uint8"  # a graph that normalises pixels itself
    pixels = rng.integers(0, 256, (4, *shape), np.uint8) if uint8 else rng.standard_normal((4, *shape), np.float32)
    feeds = {"pixel_values": pixels}
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_gpu else ["CPUExecutionProvider"]
    source = folder / encoder["files"]["fp32"]
    summaries = []
    # fp16 first: it is converted from the unfused fp32 graph, which `replace` may swap out next
    for precision in sorted(encoder["files"], key=lambda name: name != "fp16"):
        path = folder / encoder["files"][precision]
        target = fused_path(path)
        differs = _differs_from_fp32(encoder, precision)
        if differs:
            # made from the fp32 graph, the fused copy would have another graph than the manifest says
            summaries.append(f"{precision}: not fused ({differs})")
            continue
        try:
            stats = fuse_graph(source, target, heads, dim, fp16=precision == "fp16")
            report = compare_outputs(run_onnx(path, feeds, providers), run_onnx(target, feeds, providers))
        except Exception as exc:  # an optimiser that fails leaves the unfused graph in place
            target.unlink(missing_ok=True)
            summaries.append(
                f"{precision}: fusion failed ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})"
            )
            continue
        gate = FP16_GATE if precision == "fp16" else FP32_GATE
        if report.min_cosine < gate:
            target.unlink()
            summaries.append(f"{precision}: fused graph refused (min cosine {report.min_cosine:.6f} < {gate})")
            continue
        if replace:
            target.replace(path)
        summaries.append(f"{precision}: fused {stats}, min cosine {report.min_cosine:.7f} vs unfused")
    summary = "fusions: " + "; ".join(summaries)
    log(summary)
    return summary


def _differs_from_fp32(component: dict, precision: str) -> str:
    """What the graph of `precision` has that the fp32 graph has not (its attention, its pixel normalisation), or ''."""
    for field in ("attention", "normalisation"):
        kinds = component.get(field, {})
        if kinds.get(precision) != kinds.get("fp32"):
            return f"its {field}, {kinds.get(precision)}, is not the fp32 graph's"
    return ""


def infer_heads(manifest: dict) -> int:
    """Heads from the source line `jepa-export vit` writes (`... ViTConfig(..., heads=6, ...)`)."""
    source = manifest.get("source", "")
    marker = "heads="
    if marker not in source:
        raise ValueError("the manifest does not say how many attention heads the encoder has")
    return int(source.split(marker, 1)[1].split(",", 1)[0].split(")", 1)[0])
