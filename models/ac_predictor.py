"""V-JEPA 2-AC action-conditioned predictor (facebookresearch/vjepa2 `VisionTransformerPredictorAC`), our code.

Inputs, for T time steps of an H/p x W/p token grid:
  context (B, T*g*g, E)  encoder tokens of each step, ordered (t, row, column)
  actions (B, T, A)      the action taken after step t (7-D end-effector deltas for the released model)
  states  (B, T, A)      the state at step t (absolute end-effector pose)
Output: (B, T*g*g, E), at step t the prediction of the tokens of step t+1.

Each step becomes [action token, state token, g*g frame tokens]; attention is
block-causal (a token sees every token of its own and earlier steps). Rotary
positions: frame tokens get (t, row, column) as in the encoder; the action and
state tokens get only the time segment (t) rotated, like the original.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.jepa_blocks import Block, RotaryTables, TransformerConfig
from models.vjepa2 import rope_segment, rope_segment_channels, video_rope

CONDITION_TOKENS = 2  # action, state


@dataclass(frozen=True, kw_only=True)
class ACPredictorConfig(TransformerConfig):
    image_size: int = 256
    patch_size: int = 16
    embed_dim: int = 1408  # encoder width
    dim: int = 1024  # predictor width
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 4096
    action_dim: int = 7

    @property
    def tokens_per_step(self) -> int:
        return self.grid * self.grid


def block_causal_mask(steps: int, tokens_per_step: int) -> torch.Tensor:
    """(N, N) bool, N = steps * tokens_per_step: True where query step >= key step."""
    step = torch.arange(steps * tokens_per_step) // tokens_per_step
    return step.unsqueeze(1) >= step.unsqueeze(0)


def ac_rope(steps: int, grid: int, head_dim: int) -> RotaryTables:
    """Per-token tables for the sequence [a, s, frame tokens] * steps."""
    s = rope_segment_channels(head_dim)
    frames = video_rope(steps, grid, grid, head_dim)  # (steps*g*g, 3s)
    cos_t, sin_t = rope_segment(torch.arange(steps), s)  # (steps, s)
    # condition tokens: time segment rotated, row/column segments left as they are (cos 1, sin 0)
    cond_cos = torch.cat([cos_t, torch.ones(steps, 2 * s)], dim=-1).unsqueeze(1).expand(steps, CONDITION_TOKENS, 3 * s)
    cond_sin = torch.cat([sin_t, torch.zeros(steps, 2 * s)], dim=-1).unsqueeze(1).expand(steps, CONDITION_TOKENS, 3 * s)
    frame_cos = frames.cos.reshape(steps, grid * grid, 3 * s)
    frame_sin = frames.sin.reshape(steps, grid * grid, 3 * s)
    cos = torch.cat([cond_cos, frame_cos], dim=1).reshape(-1, 3 * s)
    sin = torch.cat([cond_sin, frame_sin], dim=1).reshape(-1, 3 * s)
    return RotaryTables(cos, sin)


class VJepa2ACPredictor(nn.Module):
    def __init__(self, config: ACPredictorConfig) -> None:
        super().__init__()
        self.config = config
        self.predictor_embed = nn.Linear(config.embed_dim, config.dim)
        self.action_encoder = nn.Linear(config.action_dim, config.dim)
        self.state_encoder = nn.Linear(config.action_dim, config.dim)
        # In the released weights (camera extrinsics) but unused by the released model: kept so every key has a place.
        self.extrinsics_encoder = nn.Linear(config.action_dim - 1, config.dim)
        self.predictor_blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_hidden, config.norm_eps, config.qkv_bias)
            for _ in range(config.depth)
        )
        self.predictor_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.predictor_proj = nn.Linear(config.dim, config.embed_dim)

    def forward(self, context: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, n, _ = context.shape
        per_step = cfg.tokens_per_step
        steps = n // per_step
        x = self.predictor_embed(context).reshape(b, steps, per_step, cfg.dim)  # (B, T, g*g, D)
        a = self.action_encoder(actions).unsqueeze(2)  # (B, T, 1, D)
        s = self.state_encoder(states).unsqueeze(2)  # (B, T, 1, D)
        x = torch.cat([a, s, x], dim=2).flatten(1, 2)  # (B, T*(2+g*g), D)
        rope = ac_rope(steps, cfg.grid, cfg.dim // cfg.heads)
        mask = block_causal_mask(steps, CONDITION_TOKENS + per_step)  # static per export: a constant in ONNX
        for block in self.predictor_blocks:
            x = block(x, rope, mask)
        x = x.reshape(b, steps, CONDITION_TOKENS + per_step, cfg.dim)[:, :, CONDITION_TOKENS:].flatten(1, 2)
        return self.predictor_proj(self.predictor_norm(x))  # (B, T*g*g, E)
