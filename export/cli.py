"""`jepa-export`: build model-repository entries from PyTorch models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.demo import export_demo
from export.family_cli import FAMILY_SOURCES, add_family_parsers, add_graph_arguments, graph_options, run_family
from export.pipeline import FP16_GATE, FP32_GATE, ExportOptions, ParityError
from export.probe import KIND_DEFAULTS
from export.vit import RandomViTOptions, export_random_vit
from models.demo import DEFAULT_WEIGHTS
from models.vit import ViTConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jepa-export", description=__doc__)
    sub = parser.add_subparsers(dest="source", required=True)
    demo = sub.add_parser("demo", help="the demo JEPA (encoder + action-conditioned predictor)")
    demo.add_argument("--name", default="demo", help="entry name in the repository (default: demo)")
    demo.add_argument("--out", type=Path, default=Path("model_repository"), help="model repository folder")
    demo.add_argument(
        "--weights", type=Path, default=DEFAULT_WEIGHTS, help="demo safetensors (default: the shipped trained weights)"
    )
    demo.add_argument("--fp32-gate", type=float, default=FP32_GATE, help="min cosine of fp32 ONNX vs PyTorch")
    demo.add_argument("--fp16-gate", type=float, default=FP16_GATE, help="min cosine for the fp16 copy to be kept")
    demo.add_argument("--no-fp16", action="store_true", help="skip the fp16 copy")
    demo.add_argument("--force", action="store_true", help="replace an existing entry")
    add_graph_arguments(demo)
    vit = sub.add_parser("vit", help="a plain ViT encoder with random weights (speed benchmarks)")
    add_random_model_arguments(vit, "vit")
    vit.add_argument("--image-size", type=int, default=224)
    vit.add_argument("--patch-size", type=int, default=16)
    vit.add_argument("--dim", type=int, default=384)
    vit.add_argument("--depth", type=int, default=12)
    vit.add_argument("--heads", type=int, default=6)
    vit.add_argument("--fuse", action="store_true",
                     help="ONNX Runtime's transformer fusions (SkipLayerNorm, BiasGelu) in place of the traced graphs, "
                          "each kept only if it matches the unfused graph")
    add_graph_arguments(vit)
    add_random_vjepa2_parser(sub)
    probe = sub.add_parser(
        "probe", help="a probe classifier head on a served model's frozen features (into its entry)",
        description="Train a probe head on a served model's frozen features from a labelled folder or CSV, score the "
        "exported head on held-out files and add it to the model's entry (heads/<name>.onnx + the manifest's "
        "'heads'); POST /classify with {\"head\": name} serves it after a restart. Kinds: linear (logistic "
        "regression on the pooled vector), mlp (one hidden ReLU layer on the pooled vector: non-linear questions "
        "such as an XOR of two features), attentive (V-JEPA's attentive probe: a learned query cross-attending "
        "over the encoder's token grid; needs a 'tokens' output).")
    probe.add_argument(
        "--entry", type=Path, required=True, help="the model's repository entry, e.g. model_repository/demo"
    )
    probe.add_argument("--name", required=True, help="head name (requests say {\"head\": name})")
    data = probe.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help="a folder with one sub-folder of images per label")
    data.add_argument("--csv", type=Path, help="a CSV with the columns path,label")
    probe.add_argument("--kind", choices=tuple(KIND_DEFAULTS), default="linear",
                       help="linear or mlp on the pooled embedding, attentive on the token grid (default: linear)")
    probe.add_argument("--epochs", type=int, help="training epochs (default: " + ", ".join(
        f"{kind} {epochs}" for kind, (epochs, _, _) in KIND_DEFAULTS.items()) + ")")
    probe.add_argument("--hidden", type=int, default=256, help="mlp: hidden units; attentive: width of its MLP")
    probe.add_argument("--attention-heads", type=int, default=4, help="attentive: attention heads")
    probe.add_argument("--holdout", type=float, default=0.2, help="share of the files kept out to measure accuracy")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--force", action="store_true", help="replace a head of the same name")
    add_family_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.source in FAMILY_SOURCES:
        return run_family(args)
    if args.source == "probe":
        return run_probe(args)
    if args.source == "vjepa2-random":
        return run_random_vjepa2(args)
    if args.source == "vit":
        options = ExportOptions(name=args.name, out=args.out, fp16=not args.no_fp16, force=args.force, fuse=args.fuse,
                                **graph_options(args))
    else:
        options = ExportOptions(
            name=args.name,
            out=args.out,
            fp32_gate=args.fp32_gate,
            fp16_gate=args.fp16_gate,
            fp16=not args.no_fp16,
            force=args.force,
            **graph_options(args),
        )
    try:
        if args.source == "vit":
            config = ViTConfig(image_size=args.image_size, patch_size=args.patch_size, dim=args.dim, depth=args.depth,
                               heads=args.heads)
            export_random_vit(RandomViTOptions(config=config, export=options, seed=args.seed))
        else:
            export_demo(options, weights=args.weights)
    except (ParityError, FileExistsError, ValueError) as exc:
        print(f"jepa-export: {exc}", file=sys.stderr)
        return 1
    return 0


def add_random_vjepa2_parser(sub: argparse._SubParsersAction) -> None:
    video = sub.add_parser("vjepa2-random", help="a V-JEPA 2 video encoder with random weights (speed benchmarks)")
    add_random_model_arguments(video, "vjepa2-random")
    video.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    video.add_argument("--image-size", type=int, default=256)
    video.add_argument("--patch-size", type=int, default=16)
    video.add_argument("--tubelet", type=int, default=2)
    video.add_argument("--dim", type=int, default=1024)
    video.add_argument("--depth", type=int, default=24)
    video.add_argument("--heads", type=int, default=16)
    video.add_argument("--mlp-hidden", type=int, default=4096)
    video.add_argument("--probes", type=int, default=2, help="clips in the parity gates (default 2)")
    add_graph_arguments(video)


def add_random_model_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """What every random-weight benchmark model's export takes."""
    parser.add_argument("--name", default=name, help="entry name in the repository")
    parser.add_argument("--out", type=Path, default=Path("model_repository"), help="model repository folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fp16", action="store_true", help="skip the fp16 copy")
    parser.add_argument("--force", action="store_true", help="replace an existing entry")


def run_random_vjepa2(args: argparse.Namespace) -> int:
    from export.vjepa2_random import RandomVJepa2Options, export_random_vjepa2
    from models.vjepa2 import VJepa2Config

    options = ExportOptions(name=args.name, out=args.out, fp16=not args.no_fp16, force=args.force,
                            **graph_options(args))
    try:
        if args.probes < 1:
            raise ValueError("--probes must be at least 1")
        config = VJepa2Config(image_size=args.image_size, patch_size=args.patch_size, tubelet=args.tubelet,
                              dim=args.dim, depth=args.depth, heads=args.heads, mlp_hidden=args.mlp_hidden)
        export_random_vjepa2(RandomVJepa2Options(config=config, export=options, frames=args.frames, seed=args.seed,
                                                 probes=args.probes))
    except (ParityError, FileExistsError, ValueError) as exc:
        print(f"jepa-export: {exc}", file=sys.stderr)
        return 1
    return 0


def run_probe(args: argparse.Namespace) -> int:
    from export.probe import ProbeOptions, labelled_csv, labelled_folder, train_probe

    options = ProbeOptions(entry=args.entry, name=args.name, kind=args.kind, holdout=args.holdout, seed=args.seed,
                           epochs=args.epochs, hidden=args.hidden, attention_heads=args.attention_heads,
                           force=args.force)
    try:
        if not 0 < args.holdout < 1:
            raise ValueError("--holdout must be between 0 and 1")
        if min(args.epochs or 1, args.hidden, args.attention_heads) < 1:
            raise ValueError("--epochs, --hidden and --attention-heads must be at least 1")
        samples = labelled_folder(args.data) if args.data is not None else labelled_csv(args.csv)
        train_probe(options, samples, str(args.data or args.csv))
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"jepa-export: {exc}", file=sys.stderr)
        return 1
    return 0
