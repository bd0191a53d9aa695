"""I-JEPA context encoder (facebookresearch/ijepa): a ViT with no CLS token and fixed 2-D sin-cos positions.

Images (B, 3, H, W) -> pooled (B, D) and patch tokens (B, N, D). The pooled
vector is the mean of the final, normed patch tokens ("just average pool",
ijepa#36); there is no learned pooler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.jepa_blocks import Block, TransformerConfig


@dataclass(frozen=True, kw_only=True)
class IJepaConfig(TransformerConfig):
    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    depth: int = 32
    heads: int = 16
    mlp_hidden: int = 5120


def ijepa_sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """I-JEPA's fixed positions, (grid*grid, dim): first half of the channels encodes the column, second the row."""
    if dim % 4:
        raise ValueError("sin-cos positions need dim divisible by 4")

    def encode(pos: np.ndarray, channels: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(channels // 2, dtype=np.float64) / (channels / 2))
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)  # (N, channels/2)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    table = np.concatenate([encode(cols, dim // 2), encode(rows, dim // 2)], axis=1)
    return torch.from_numpy(table).float()


class PatchEmbed2D(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class IJepaEncoder(nn.Module):
    def __init__(self, config: IJepaConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed2D(config.in_chans, config.dim, config.patch_size)
        # A buffer, not a parameter: fixed, but saved in (and loaded from) checkpoints like the original's.
        self.register_buffer("pos_embed", ijepa_sincos_positions(config.grid, config.dim).unsqueeze(0))
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_hidden, config.norm_eps, config.qkv_bias)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(pixel_values) + self.pos_embed  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        tokens = self.norm(x)
        return tokens.mean(dim=1), tokens
