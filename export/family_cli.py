"""`jepa-export ijepa|vjepa2 PATH`: the command-line side of export/families.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from export.attention import ATTENTION_KINDS, DEFAULT_ATTENTION
from export.families import CheckpointExportOptions, export_ijepa, export_vjepa2
from export.pipeline import FP16_GATE, FP32_GATE, ExportOptions, ParityError
from models.checkpoints import LoadOptions

FAMILY_SOURCES = {"ijepa": export_ijepa, "vjepa2": export_vjepa2}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path,
                        help="a Hugging Face folder (config.json + model.safetensors) or an original checkpoint file")
    parser.add_argument("--name", required=True, help="entry name in the repository")
    parser.add_argument("--out", type=Path, default=Path("model_repository"), help="model repository folder")
    parser.add_argument("--heads", type=int,
                        help="attention heads (original files do not record it; default: the published architecture's)")
    parser.add_argument("--fp32-gate", type=float, default=FP32_GATE, help="min cosine of fp32 ONNX vs PyTorch")
    parser.add_argument("--fp16-gate", type=float, default=FP16_GATE, help="min cosine for the fp16 copy to be kept")
    parser.add_argument("--no-fp16", action="store_true", help="skip the fp16 copy")
    parser.add_argument("--force", action="store_true", help="replace an existing entry")
    add_graph_arguments(parser)


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    """The graph options every exporter of an encoder has."""
    add_attention_argument(parser)
    parser.add_argument("--float-input", action="store_true",
                        help="encoder graphs take float32 pixels the host normalised, instead of uint8 pixels they "
                             "normalise themselves (export/pixels.py)")
    parser.add_argument("--no-fold", action="store_true",
                        help="uint8 graphs keep their normalisation as a Mul + Add before the patch embedding, instead "
                             "of folding it into the patch-embedding Conv's weights (export/normalisation_fold.py)")


def graph_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ExportOptions fields that add_graph_arguments set."""
    return {"attention": args.attention, "pixel_dtype": "float32" if args.float_input else "uint8",
            "fold_normalisation": not args.no_fold}


def add_attention_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attention", choices=ATTENTION_KINDS, default=DEFAULT_ATTENTION,
                        help="attention as one operator: mha (com.microsoft.MultiHeadAttention, the default), onnx "
                             "(the ONNX Attention operator, opset 23) or unfused (MatMul + Softmax + MatMul); a fused "
                             "graph that fails its parity gate is replaced by the unfused one (export/attention.py)")


def add_family_parsers(sub: argparse._SubParsersAction) -> None:
    ijepa = sub.add_parser("ijepa", help="an I-JEPA checkpoint (HF IJepaModel folder or original .pth.tar)")
    _common(ijepa)
    vjepa2 = sub.add_parser("vjepa2", help="a V-JEPA 2 / 2-AC checkpoint (HF VJEPA2Model folder or original .pt)")
    _common(vjepa2)
    vjepa2.add_argument("--frames", type=int,
                        help="frames per clip, fixed per export (default 16; 2 for a 2-AC model)")
    vjepa2.add_argument("--image-size", type=int,
                        help="crop size of an original RoPE checkpoint (default 256; vitg-384: 384)")
    vjepa2.add_argument("--history", type=int, default=2,
                        help="V-JEPA 2-AC: frames of context the predictor export takes")
    vjepa2.add_argument("--predictor-heads", type=int, help="V-JEPA 2-AC predictor heads (default 16)")
    vjepa2.add_argument("--future-steps", type=int,
                        help="V-JEPA 2 with its mask predictor: tubelet steps /predict_future predicts from the clip's "
                             "first ones (default: half the clip; 0: do not export the predictor)")
    vjepa2.add_argument("--surprise-videos", type=Path,
                        help="V-JEPA 2 with its mask predictor: a folder of normal videos; the future-token error on "
                             "them calibrates /surprise (without it the model serves no surprise score)")
    vjepa2.add_argument("--surprise-trajectories", type=Path,
                        help="V-JEPA 2-AC: a folder of normal trajectories, one .npz each (frames uint8 (T, H, W, 3), "
                             "poses (T, 7), actions (T - 1, 7)); the teacher-forced next-frame error on them "
                             "calibrates /surprise (without it the model serves no surprise score)")


def run_family(args: argparse.Namespace) -> int:
    export = ExportOptions(name=args.name, out=args.out, fp32_gate=args.fp32_gate, fp16_gate=args.fp16_gate,
                           fp16=not args.no_fp16, force=args.force, **graph_options(args))
    load = LoadOptions(heads=args.heads, image_size=getattr(args, "image_size", None),
                       predictor_heads=getattr(args, "predictor_heads", None))
    options = CheckpointExportOptions(path=args.path, export=export, load=load, frames=getattr(args, "frames", None),
                                      history=getattr(args, "history", 2),
                                      future_steps=getattr(args, "future_steps", None),
                                      surprise_videos=getattr(args, "surprise_videos", None),
                                      surprise_trajectories=getattr(args, "surprise_trajectories", None))
    try:
        FAMILY_SOURCES[args.source](options)
    except (ParityError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"jepa-export: {exc}", file=sys.stderr)
        return 1
    return 0
