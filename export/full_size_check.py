"""Export a random-weight model of a published size, saved in Meta's original file layout.

Checks that the loaders' defaults (head counts, crop size) and the export path
(tracing, parity gates, ONNX external data past 2 GiB) hold at real sizes,
without the real weights (which cannot be downloaded here):

    .venv/bin/python -m export.full_size_check vjepa2-vitl --out /tmp/full --frames 2
    .venv/bin/python -m export.full_size_check ijepa-vith14 --out /tmp/full

Prints the export's own log, its wall time and the peak memory of the process.
The embeddings are meaningless; only the mechanics are being checked.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch

from export.cli import main as export_main
from models.ijepa import IJepaConfig, IJepaEncoder
from models.vjepa2 import VJepa2Config, VJepa2Encoder

# name -> (family, prefix the original training code leaves on keys, top-level key, module builder)
ARCHITECTURES: dict[str, tuple[str, str, str, Callable[[], torch.nn.Module]]] = {
    "ijepa-vith14": ("ijepa", "module.", "target_encoder", lambda: IJepaEncoder(IJepaConfig())),
    "ijepa-vitg16": ("ijepa", "module.", "target_encoder", lambda: IJepaEncoder(
        IJepaConfig(patch_size=16, dim=1408, depth=40, heads=16, mlp_hidden=6144))),
    "vjepa2-vitl": ("vjepa2", "module.backbone.", "encoder", lambda: VJepa2Encoder(VJepa2Config())),
    "vjepa2-vith": ("vjepa2", "module.backbone.", "encoder", lambda: VJepa2Encoder(
        VJepa2Config(dim=1280, depth=32, heads=16, mlp_hidden=5120))),
    "vjepa2-vitg": ("vjepa2", "module.backbone.", "encoder", lambda: VJepa2Encoder(
        VJepa2Config(dim=1408, depth=40, heads=22, mlp_hidden=6144))),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", choices=sorted(ARCHITECTURES))
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (checkpoint + repository)")
    parser.add_argument("--frames", type=int, default=2, help="V-JEPA 2 frames per clip")
    parser.add_argument("--no-fp16", action="store_true")
    args = parser.parse_args(argv)
    family, prefix, top_key, build = ARCHITECTURES[args.arch]
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / f"{args.arch}-random.{'pth.tar' if family == 'ijepa' else 'pt'}"
    torch.manual_seed(0)
    module = build()
    torch.save({top_key: {prefix + k: v for k, v in module.state_dict().items()}, "epoch": 0}, checkpoint)
    del module
    command = [family, str(checkpoint), "--name", args.arch, "--out", str(args.out / "repo"), "--force"]
    command += ["--frames", str(args.frames)] if family == "vjepa2" else []
    command += ["--no-fp16"] if args.no_fp16 else []
    start = time.perf_counter()
    code = export_main(command)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.arch}: exit {code}, {time.perf_counter() - start:.0f} s export, peak RSS {peak_gib:.1f} GiB")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
