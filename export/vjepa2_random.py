"""Export a V-JEPA 2 video encoder with random weights: for speed benchmarks of clips (loadtests/bench_gpu.py).

`jepa-export vjepa2-random --name vjepa2l --frames 16` is V-JEPA 2's ViT-L (24 blocks, width 1024, 16 heads)
on 16 frames of 256 x 256 in tubelets of 2: 2,048 tokens a clip, with its 3-D rotary positions. The
embeddings mean nothing; the cost per clip is what is being measured. The parity gate uses fewer probe clips
than a checkpoint export (`--probes`, 2 by default): a 2,048-token ViT-L clip costs seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.families import POOLING, video_probes
from export.manifest import embedding_space_id, state_dict_sha256
from export.pipeline import IMAGENET_MEAN, IMAGENET_STD, ExportOptions, export_pixel_component, write_entry
from models.vjepa2 import VJepa2Config, VJepa2Encoder


@dataclass(frozen=True, kw_only=True)
class RandomVJepa2Options:
    config: VJepa2Config
    export: ExportOptions
    frames: int = 16
    seed: int = 0
    probes: int = 2


def random_vjepa2(config: VJepa2Config, seed: int) -> VJepa2Encoder:
    """The encoder of a seed (the bench's eager reference builds the same one); the global RNG is left alone."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return VJepa2Encoder(config).eval()
    finally:
        torch.random.set_rng_state(state)


def export_random_vjepa2(options: RandomVJepa2Options, log: Callable[[str], None] = print) -> Path:
    cfg, opts, frames = options.config, options.export, options.frames
    if frames % cfg.tubelet:
        raise ValueError(f"--frames {frames} is not a multiple of the tubelet ({cfg.tubelet})")
    encoder = random_vjepa2(cfg, options.seed)
    steps = frames // cfg.tubelet
    params = sum(p.numel() for p in encoder.parameters())
    log(f"random V-JEPA 2: {params / 1e6:.1f}M parameters, {steps * cfg.grid * cfg.grid} tokens a clip of {frames}")

    def build(folder: Path) -> dict[str, Any]:
        clips = video_probes(options.probes, frames, cfg.image_size)
        component = export_pixel_component(encoder, clips, ("pooled", "frames", "tokens"), folder, "encoder", opts,
                                           log, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="NCTHW")
        checkpoint = state_dict_sha256([encoder])
        preprocessing = {"image_size": [cfg.image_size, cfg.image_size], "resize": "bicubic",
                         "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "frames_per_clip": frames,
                         "tubelet": cfg.tubelet, "patch_size": cfg.patch_size}
        return {
            "family": "vjepa2",
            "checkpoint_sha256": checkpoint,
            "source": f"models.vjepa2 random seed={options.seed} {cfg}",
            "space_id": embedding_space_id("vjepa2", checkpoint, preprocessing, POOLING, cfg.dim),
            "input": {"kind": "video", "layout": "NCTHW", "channels": 3, "dtype": opts.pixel_dtype, **preprocessing,
                      "image": f"repeat the image {frames} times along T"},
            "output": {"dim": cfg.dim, "token_grid": [steps, cfg.grid, cfg.grid], "pooling": POOLING,
                       "frames": "one vector per tubelet step: mean of that step's g*g tokens"},
            "architecture": {"depth": cfg.depth, "heads": cfg.heads, "mlp_hidden": cfg.mlp_hidden},
            "components": {"encoder": component},
        }

    return write_entry(opts, build, log)
