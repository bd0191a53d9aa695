"""The uint8 pixels' normalisation folded into the patch-embedding Conv against the unfolded graph, on the CPU.

    python -m loadtests.bench_fold     # the tiny ViT where the Mul + Add cost about what the Conv does (seconds)
    python -m loadtests.bench_fold --image-size 32 --patch-size 8 --seconds 0.05 --rounds 1   # smoke run

The graphs are two `jepa-export vit` entries of one seed (the same weights), fp32: the export's default, its
normalisation folded into the patch embedding (export/normalisation_fold.py), and `--no-fold`, which keeps the
Cast -> Mul -> Add before the Conv. Both run in ONNX Runtime with the service's CPU session options on the same uint8
pixels, timed in turns (loadtests/bench_attention.py `measure`), `--rounds` times each keeping its best. The
default is the model of the measurement that asked for the fold: 1 block, 32 wide, 224 px / 16, batch 8, 1 thread,
where the patch embedding is a large part of the work; in a ViT-S the fold saves the same microseconds out of many
more. Quote the figures from a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from loadtests.bench_attention import add_timing_arguments, add_vit_arguments, measure, vit_arguments

GRAPHS = {"unfolded": ["--no-fold"], "folded": []}


def export_graph(name: str, repository: Path, vit_args: list[str]) -> Path:
    """`jepa-export vit` (fp32 only), folded or not -> the entry's encoder graph."""
    from export.cli import main as export

    with contextlib.redirect_stdout(io.StringIO()):
        code = export(["vit", "--name", name, "--out", str(repository), "--no-fp16", *GRAPHS[name], *vit_args])
    if code:
        raise RuntimeError(f"jepa-export vit ({name}) failed")
    encoder = json.loads((repository / name / "manifest.json").read_text())["components"]["encoder"]
    got = encoder.get("normalisation", {}).get("fp32")
    if got != name:  # the fold was refused: the entry is not the graph being compared
        raise RuntimeError(f"the {name} export has a {got} graph ({encoder['parity'].get('normalisation_fallback')})")
    return repository / name / "encoder.onnx"


def ops_before_conv(path: Path) -> list[str]:
    """The operators from the pixels to the first Conv, in graph order."""
    import onnx

    ops = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type == "Conv":
            return ops
        if node.op_type != "Shape":
            ops.append(node.op_type)
    return ops


def same_outputs(graphs: dict[str, Path], batch: int) -> float:
    """The largest |difference| of the pooled vectors of the two graphs on one batch (float32 rounding)."""
    import onnxruntime as ort

    from export.parity import run_onnx

    session = ort.InferenceSession(str(graphs["folded"]), providers=["CPUExecutionProvider"])
    shape = [int(d) for d in session.get_inputs()[0].shape[1:]]
    pixels = np.random.default_rng(0).integers(0, 256, (batch, *shape), np.uint8)
    pooled = [run_onnx(path, {"pixel_values": pixels})["pooled"] for path in graphs.values()]
    return float(np.abs(pooled[0] - pooled[1]).max())


def report(figures: dict[str, dict[int, float]], graphs: dict[str, Path], difference: float,
           args: argparse.Namespace) -> str:
    from loadtests.bench_gpu import gpu_description

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [f"Pixel normalisation fold on the CPU: ViT {args.dim}-wide, {args.depth} blocks, {args.heads} heads, "
             f"{args.image_size} px / {args.patch_size}; fp32; batch {args.batch}; {args.threads or 'all'} "
             f"thread(s); {gpu_description('cpu')}; load average at the end {load}; pooled vectors equal to "
             f"{difference:.1e}",
             "", "| graph | ops before the Conv | ms per image | vs unfolded |", "|---|---|---:|---:|"]
    ms = {name: 1000.0 / by_batch[args.batch] for name, by_batch in figures.items()}
    for name, value in ms.items():
        lines.append(f"| {name} | {', '.join(ops_before_conv(graphs[name]))} | {value:.4f} | "
                     f"{ms['unfolded'] / value:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_vit_arguments(parser, image_size=224, patch_size=16, dim=32, depth=1, heads=2)
    parser.add_argument("--batch", type=int, default=8)
    add_timing_arguments(parser, rounds=5, threads=1)
    parser.add_argument("--out", type=Path, help="also write the figures (ms per image) here as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fold-") as scratch:
        graphs = {name: export_graph(name, Path(scratch), vit_arguments(args)) for name in GRAPHS}
        difference = same_outputs(graphs, args.batch)
        figures = measure(graphs, [args.batch], args.seconds, args.rounds, args.threads)
        print(report(figures, graphs, difference, args))
    if args.out is not None:
        args.out.write_text(json.dumps({name: 1000.0 / by[args.batch] for name, by in figures.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
