"""Transformer pieces shared by our ViT, I-JEPA, V-JEPA 2 and V-JEPA 2-AC modules: the config fields they have in
common, the attention block, rotary tables.

Parameter names follow Meta's original code (`blocks.N.attn.qkv`, `mlp.fc1`,
...), so an original checkpoint maps onto these modules by name once its
`module.` / `backbone.` prefixes are stripped; see models/checkpoints.py.

Attention is written out by default (matmul + softmax, optional boolean mask and
rotary tables): the graph today's exports were gated with. `use_fused_attention`
switches every attention layer of a model to one operator
(models/fused_attention.py), which the ONNX export turns into a fused kernel
(export/attention.py); the arithmetic is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.fused_attention import additive_mask


@dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """What every patch transformer here has; each model's config adds its own fields and defaults."""

    image_size: int
    patch_size: int
    in_chans: int = 3
    dim: int
    depth: int
    heads: int
    qkv_bias: bool = True
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the 90-degree turn of each adjacent pair."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., D/2, 2)
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class RotaryTables:
    """cos/sin tables (N, R) for the first R channels of every head; the remaining channels are not rotated."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        self.cos, self.sin = cos, sin

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, h, N, hs); rotated part (B, h, N, R)
        r = self.cos.shape[-1]
        head, tail = x[..., :r], x[..., r:]
        return torch.cat([head * self.cos + rotate_pairs(head) * self.sin, tail], dim=-1)

    def apply_tokens_first(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """The same rotation on the token-major layout (B, N, heads * hs) the fused operator reads."""
        per_head = x.unflatten(-1, (heads, -1))  # (B, N, h, hs)
        r = self.cos.shape[-1]
        head, tail = per_head[..., :r], per_head[..., r:]
        cos, sin = self.cos.unsqueeze(1), self.sin.unsqueeze(1)  # (N, 1, R): the same angles for every head
        return torch.cat([head * cos + rotate_pairs(head) * sin, tail], dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.fused = False  # one operator (torch.ops.jepa.attention) in place of matmul + softmax + matmul

    def forward(
        self, x: torch.Tensor, rope: RotaryTables | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.fused:
            return self._fused(x, rope, mask)
        b, n, d = x.shape
        hs = d // self.heads
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, hs).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hs)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if rope is not None:
            q, k = rope.apply(q), rope.apply(k)
        attn = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, h, N, N)
        if mask is not None:
            # mask (N, N): True where a query may attend to a key
            attn = attn.masked_fill(~mask, float("-inf"))
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.proj(out)

    def _fused(self, x: torch.Tensor, rope: RotaryTables | None, mask: torch.Tensor | None) -> torch.Tensor:
        # the packed projection's columns are [q | k | v], each heads x hs: the token-major layout as it is
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, N, D) each
        if rope is not None:
            q, k = rope.apply_tokens_first(q, self.heads), rope.apply_tokens_first(k, self.heads)
        bias = None if mask is None else additive_mask(mask, x.dtype)
        return self.proj(torch.ops.jepa.attention(q, k, v, self.heads, bias))


def use_fused_attention(model: nn.Module, fused: bool = True) -> int:
    """Switch every attention layer of `model` to the fused operator (or back); returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    for layer in layers:
        layer.fused = fused
    return len(layers)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, eps: float, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(
        self, x: torch.Tensor, rope: RotaryTables | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope, mask)
        return x + self.mlp(self.norm2(x))
