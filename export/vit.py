"""Export a plain ViT encoder with random weights: for speed benchmarks at realistic sizes.

`jepa-export vit --name vits16 --image-size 224 --patch-size 16 --dim 384 --depth 12 --heads 6`
is a ViT-S/16 (22M parameters), the size of a small I-JEPA encoder. The
embeddings mean nothing; the cost per image is what is being measured.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from export.demo import ExportOptions, export_component, image_probes
from export.manifest import embedding_space_id, staged_entry, state_dict_sha256, tool_versions, write_manifest
from models.vit import ViTConfig, ViTEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    with staged_entry(opts.out, opts.name, opts.force) as folder:
        pixels = image_probes(8, cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)
        encoder_entry = export_component(encoder, {"pixel_values": pixels}, ("pooled", "tokens"), folder, "encoder", opts, log)
        checkpoint = state_dict_sha256([encoder])
        preprocessing = {
            "image_size": [cfg.image_size, cfg.image_size], "resize": "bilinear", "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "frames_per_clip": 1, "tubelet": 1, "patch_size": cfg.patch_size,
        }
        pooling = "mean_final_patch_tokens"
        write_manifest(folder, {
            "name": opts.name,
            "family": "vit",
            "checkpoint_sha256": checkpoint,
            "source": f"models.vit random seed={options.seed} {cfg}",
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "tools": tool_versions(),
            "space_id": embedding_space_id("vit", checkpoint, preprocessing, pooling, cfg.dim),
            "input": {"kind": "image", "layout": "NCHW", "channels": 3, **preprocessing},
            "output": {"dim": cfg.dim, "token_grid": [cfg.grid, cfg.grid], "pooling": pooling},
            "components": {"encoder": encoder_entry},
        })
        if opts.fuse:
            from export.fusion import fuse_entry  # onnxruntime.transformers: only when asked for

            summary = fuse_entry(folder, replace=True, log=log)
            manifest = json.loads((folder / "manifest.json").read_text())
            write_manifest(folder, {**manifest, "fusion": summary})
    target = opts.out / opts.name
    log(f"wrote {target}")
    return target
