"""Export a plain ViT encoder with random weights: for speed benchmarks at realistic sizes.

`jepa-export vit --name vits16 --image-size 224 --patch-size 16 --dim 384 --depth 12 --heads 6`
is a ViT-S/16 (22M parameters), the size of a small I-JEPA encoder. The
embeddings mean nothing; the cost per image is what is being measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.manifest import embedding_space_id, state_dict_sha256
from export.pipeline import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExportOptions,
    export_pixel_component,
    image_probes,
    write_entry,
)
from models.vit import ViTConfig, ViTEncoder


@dataclass(frozen=True, kw_only=True)
class RandomViTOptions:
    config: ViTConfig
    export: ExportOptions
    seed: int = 0


def export_random_vit(options: RandomViTOptions, log: Callable[[str], None] = print) -> Path:
    cfg, opts = options.config, options.export
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(options.seed)
        encoder = ViTEncoder(cfg).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    params = sum(p.numel() for p in encoder.parameters())
    log(f"random ViT: {params / 1e6:.1f}M parameters, {cfg.num_patches} patches of {cfg.patch_size}px, dim {cfg.dim}")
    def build(folder: Path) -> dict[str, Any]:
        pixels = image_probes(8, cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)
        encoder_entry = export_pixel_component(encoder, pixels, ("pooled", "tokens"), folder, "encoder", opts, log,
                                               mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="NCHW")
        checkpoint = state_dict_sha256([encoder])
        preprocessing = {
            "image_size": [cfg.image_size, cfg.image_size], "resize": "bilinear", "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "frames_per_clip": 1, "tubelet": 1, "patch_size": cfg.patch_size,
        }
        pooling = "mean_final_patch_tokens"
        return {
            "family": "vit",
            "checkpoint_sha256": checkpoint,
            "source": f"models.vit random seed={options.seed} {cfg}",
            "space_id": embedding_space_id("vit", checkpoint, preprocessing, pooling, cfg.dim),
            "input": {"kind": "image", "layout": "NCHW", "channels": 3, "dtype": opts.pixel_dtype, **preprocessing},
            "output": {"dim": cfg.dim, "token_grid": [cfg.grid, cfg.grid], "pooling": pooling},
            "components": {"encoder": encoder_entry},
        }

    def fuse(folder: Path) -> dict[str, Any]:
        from export.fusion import fuse_entry  # onnxruntime.transformers: only when asked for

        return {"fusion": fuse_entry(folder, replace=True, log=log)}

    return write_entry(opts, build, log, finish=fuse if opts.fuse else None)
