"""A small, readable Vision Transformer context encoder.

The pooled embedding is the mean of the final, normed patch tokens (no CLS
token), which is how I-JEPA and V-JEPA 2 are probed. Attention is written out
(matmul + softmax) unless switched to the fused operator for export (models/jepa_blocks.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.jepa_blocks import Block, TransformerConfig


@dataclass(frozen=True, kw_only=True)
class ViTConfig(TransformerConfig):
    image_size: int = 64
    patch_size: int = 8
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (as in I-JEPA / MAE): half the channels encode rows, half columns."""
    if dim % 4:
        raise ValueError("sin-cos positions need dim divisible by 4")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)  # (N, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, dim/2)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()  # (N, dim)


class ViTEncoder(nn.Module):
    """Images (B, C, H, W) -> pooled (B, D) and patch tokens (B, N, D)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = nn.Conv2d(config.in_chans, config.dim, config.patch_size, stride=config.patch_size)
        self.register_buffer("pos_embed", sincos_position_embedding(config.grid, config.dim).unsqueeze(0))
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, int(config.dim * config.mlp_ratio), config.norm_eps, config.qkv_bias)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(pixel_values)  # (B, D, g, g)
        x = x.flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        tokens = self.norm(x)
        return tokens.mean(dim=1), tokens
