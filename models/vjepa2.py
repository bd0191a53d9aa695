"""V-JEPA 2 video encoder (facebookresearch/vjepa2): a ViT on 3-D tubelets with 3-D rotary positions.

Clips (B, 3, T, H, W) -> pooled (B, D), per-time-step vectors (B, T/tubelet, D)
and patch tokens (B, (T/tubelet)(H/p)(W/p), D), tokens ordered time, row,
column. An image is a clip of `tubelet` identical frames (vjepa2#95). The pooled
vector is the mean of the final normed tokens (vjepa2#35).

Rotary positions follow the released code exactly, including its known quirk
(vjepa2 PR #15): each head's first 3*s channels (s = 2*((head_dim//3)//2)) are
split into time, row and column segments; within a segment, the channel pair
(2i, 2i+1) is turned by the angles of frequencies 2i and 2i+1 of a table that
is the s/2 frequencies written twice, not by one frequency per pair. The
released weights were trained with it, so it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.jepa_blocks import Block, RotaryTables, TransformerConfig


@dataclass(frozen=True, kw_only=True)
class VJepa2Config(TransformerConfig):
    image_size: int = 256
    patch_size: int = 16
    tubelet: int = 2
    dim: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_dim // 3 < 2:
            raise ValueError(f"head_dim {self.head_dim} is too small for 3-D rotary positions")


def rope_segment(positions: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (N, channels) for one axis; the channels/2 frequencies are tiled twice (see module docstring)."""
    omega = torch.arange(channels // 2, dtype=torch.float32)
    omega = 1.0 / 10000 ** (omega / (channels / 2.0))
    freq = positions.float().unsqueeze(-1) * omega  # (N, channels/2)
    return freq.cos().repeat(1, 2), freq.sin().repeat(1, 2)


def rope_segment_channels(head_dim: int) -> int:
    return 2 * ((head_dim // 3) // 2)


def video_rope(grid_t: int, grid_h: int, grid_w: int, head_dim: int) -> RotaryTables:
    """Tables for tokens ordered (t, h, w): segments [time | row | column] of s channels each."""
    s = rope_segment_channels(head_dim)
    ids = torch.arange(grid_t * grid_h * grid_w)
    t, rest = ids // (grid_h * grid_w), ids % (grid_h * grid_w)
    h, w = rest // grid_w, rest % grid_w
    parts = [rope_segment(p, s) for p in (t, h, w)]
    return RotaryTables(torch.cat([c for c, _ in parts], dim=-1), torch.cat([s_ for _, s_ in parts], dim=-1))


class PatchEmbed3D(nn.Module):
    def __init__(self, in_chans: int, dim: int, tubelet: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, (tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class VJepa2Encoder(nn.Module):
    def __init__(self, config: VJepa2Config) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed3D(config.in_chans, config.dim, config.tubelet, config.patch_size)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_hidden, config.norm_eps, config.qkv_bias)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def tokens(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> final normed tokens (B, N, D)."""
        _, _, frames, height, width = video.shape
        cfg = self.config
        if frames % cfg.tubelet:
            raise ValueError(f"{frames} frames is not a multiple of the tubelet ({cfg.tubelet})")
        grid = (frames // cfg.tubelet, height // cfg.patch_size, width // cfg.patch_size)
        rope = video_rope(*grid, cfg.head_dim)  # shapes are static per export, so these fold to constants
        x = self.patch_embed(video)
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, T, H, W) -> pooled (B, D), per-step vectors (B, T/tubelet, D), tokens (B, N, D)."""
        tokens = self.tokens(pixel_values)  # (B, N, D)
        b, n, d = tokens.shape
        steps = pixel_values.shape[2] // self.config.tubelet
        frames = tokens.reshape(b, steps, n // steps, d).mean(dim=2)  # (B, T/tubelet, D)
        return tokens.mean(dim=1), frames, tokens
