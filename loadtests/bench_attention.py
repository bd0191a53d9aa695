"""Fused attention against today's graph on the CPU: img/s at batch 1 and at the best batch.

    python -m loadtests.bench_attention            # ViT-S/16 at 224 px, fp32, this machine's cores (minutes)
    python -m loadtests.bench_attention --image-size 32 --patch-size 8 --dim 32 --depth 1 --heads 2 \\
        --batches 1,2 --seconds 0.1 --rounds 1     # smoke run (tests/loadtests/test_bench_gpu.py)

The graphs are `jepa-export vit` entries of one seed (the same weights), fp32, one per `--attention`: `mha`
(com.microsoft.MultiHeadAttention, the export's default), `onnx` (the ONNX Attention operator) and `unfused` (MatMul +
Softmax + MatMul: the graph exports had before). Each runs in ONNX Runtime with the service's CPU session options
(ORT_ENABLE_ALL, one op at a time) on uint8 pixels. Points are timed in turns, `--rounds` times over every graph
and batch size, each keeping its best: load that drifts during the run falls on every graph alike. Quote the
figures from a quiet machine (docs/bench/serving.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

KINDS = ("mha", "onnx", "unfused")


def export_graph(kind: str, repository: Path, vit_args: list[str]) -> Path:
    """`jepa-export vit --attention KIND` (fp32 only) -> the entry's encoder graph."""
    from export.cli import main as export

    with contextlib.redirect_stdout(io.StringIO()):
        code = export(["vit", "--name", kind, "--out", str(repository), "--no-fp16", "--attention", kind, *vit_args])
    if code:
        raise RuntimeError(f"jepa-export vit --attention {kind} failed")
    manifest = json.loads((repository / kind / "manifest.json").read_text())
    got = manifest["components"]["encoder"]["attention"]["fp32"]
    if got != kind:  # the fused graph failed its gate: the entry has the unfused graph, not what is being compared
        raise RuntimeError(f"--attention {kind}: the export kept {got} attention "
                           f"({manifest['components']['encoder']['parity'].get('attention_fallback')})")
    return repository / kind / "encoder.onnx"


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def images_per_second(run, batch: int, seconds: float) -> float:
    run()
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or runs < 2:
        run()
        runs += 1
    return runs * batch / elapsed


def measure(graphs: dict[str, Path], batches: list[int], seconds: float, rounds: int,
            threads: int) -> dict[str, dict[int, float]]:
    sessions = {kind: session(path, threads) for kind, path in graphs.items()}
    shape = [int(d) for d in next(iter(sessions.values())).get_inputs()[0].shape[1:]]
    best: dict[str, dict[int, float]] = {kind: {} for kind in graphs}
    for _ in range(rounds):
        for batch in batches:
            pixels = np.random.default_rng(batch).integers(0, 256, (batch, *shape), np.uint8)
            for kind, ort_session in sessions.items():
                rate = images_per_second(lambda s=ort_session, x=pixels: s.run(["pooled"], {"pixel_values": x}),
                                         batch, seconds)
                best[kind][batch] = max(best[kind].get(batch, 0.0), rate)
    return best


def report(figures: dict[str, dict[int, float]], args: argparse.Namespace) -> str:
    from loadtests.bench_gpu import gpu_description

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [f"CPU attention benchmark: ViT {args.dim}-wide, {args.depth} blocks, {args.heads} heads, "
             f"{args.image_size} px / {args.patch_size}; fp32; {gpu_description('cpu')}; load average at the end "
             f"{load}",
             "", "| attention | batch 1 img/s | best img/s (batch) | best vs unfused |", "|---|---:|---:|---:|"]
    unfused = max(figures.get("unfused", {0: 0.0}).values())
    for kind, by_batch in figures.items():
        batch, rate = max(by_batch.items(), key=lambda item: item[1])
        versus = f"{rate / unfused:.2f}×" if unfused else "n/a"
        lines.append(f"| {kind} | {by_batch.get(1, 0.0):,.1f} | {rate:,.1f} ({batch}) | {versus} |")
    return "\n".join(lines)


VIT_SHAPE = ("image_size", "patch_size", "dim", "depth", "heads")


def add_vit_arguments(parser: argparse.ArgumentParser, **defaults: int) -> None:
    """The shape of the `jepa-export vit` model a CPU bench exports (--image-size, --patch-size, ...)."""
    for name in VIT_SHAPE:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=defaults[name])


def add_timing_arguments(parser: argparse.ArgumentParser, *, rounds: int, threads: int) -> None:
    """How `measure` times each point: --seconds, --rounds, --threads."""
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per point and round")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=threads, help="ONNX Runtime intra-op threads (0: one per core)")


def vit_arguments(args: argparse.Namespace) -> list[str]:
    """Those arguments again, for `jepa-export vit`."""
    return [str(v) for name in VIT_SHAPE for v in (f"--{name.replace('_', '-')}", getattr(args, name))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_vit_arguments(parser, image_size=224, patch_size=16, dim=384, depth=12, heads=6)
    parser.add_argument("--attention", default=",".join(KINDS), help="graphs to compare (default: all three)")
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    add_timing_arguments(parser, rounds=3, threads=0)
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-attention-") as scratch:
        graphs = {kind: export_graph(kind, Path(scratch), vit_arguments(args)) for kind in args.attention.split(",")}
        figures = measure(graphs, [int(b) for b in args.batches.split(",")], args.seconds, args.rounds, args.threads)
    print(report(figures, args))
    if args.out is not None:
        args.out.write_text(json.dumps({kind: {str(b): v for b, v in by.items()} for kind, by in figures.items()},
                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
