"""V-JEPA 2's mask-token predictor (facebookresearch/vjepa2 `VisionTransformerPredictor`), our code, and the
future-prediction graph we export from it.

The predictor embeds the context tokens, appends one learned mask token per
target position, runs pre-norm blocks with the encoder's 3-D rotary positions
(each token keeps its own place in the clip's (time, row, column) grid) and
projects the target tokens back to the encoder width.

`FuturePrediction` fixes the masks for serving: the context is the first
`context_steps` tubelet steps of a clip, the targets are the next
`future_steps` steps. The context is encoded alone (the encoder sees only the
visible tokens, as in V-JEPA's masked training), so the graph is
frames of the past (B, 3, Tc, H, W) -> predicted tokens of the future (B, m*g*g, D).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.jepa_blocks import Block
from models.vjepa2 import VJepa2Encoder, video_rope

MASK_TOKEN_INDEX = 1  # the released forward's default `mask_index`; transformers picks the same one


@dataclass(frozen=True, kw_only=True)
class MaskPredictorConfig:
    embed_dim: int = 1024  # encoder width
    dim: int = 384
    depth: int = 12
    heads: int = 12
    mlp_hidden: int = 1536
    mask_tokens: int = 10
    qkv_bias: bool = True
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")


class VJepa2MaskPredictor(nn.Module):
    def __init__(self, config: MaskPredictorConfig) -> None:
        super().__init__()
        self.config = config
        self.predictor_embed = nn.Linear(config.embed_dim, config.dim)
        self.mask_tokens = nn.Parameter(torch.zeros(config.mask_tokens, 1, 1, config.dim))
        self.predictor_blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_hidden, config.norm_eps, config.qkv_bias)
            for _ in range(config.depth)
        )
        self.predictor_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.predictor_proj = nn.Linear(config.dim, config.embed_dim)

    def forward(self, context: torch.Tensor, targets: int, grid: tuple[int, int, int]) -> torch.Tensor:
        """context (B, Nc, E): tokens at clip positions 0..Nc-1; -> predictions for positions Nc..Nc+targets-1.

        Context then targets is already the sorted position order, so no sort / unsort is needed."""
        cfg = self.config
        b = context.shape[0]
        token = self.mask_tokens[MASK_TOKEN_INDEX % cfg.mask_tokens].reshape(1, 1, cfg.dim)
        x = torch.cat([self.predictor_embed(context), token.expand(b, targets, cfg.dim)], dim=1)
        rope = video_rope(*grid, cfg.dim // cfg.heads)  # the grid holds exactly the context + target positions
        for block in self.predictor_blocks:
            x = block(x, rope)
        return self.predictor_proj(self.predictor_norm(x[:, -targets:]))


class FuturePrediction(nn.Module):
    """Past frames -> (predicted future tokens (B, m*g*g, E), pooled context (B, E))."""

    def __init__(self, encoder: VJepa2Encoder, predictor: VJepa2MaskPredictor, future_steps: int) -> None:
        super().__init__()
        self.encoder, self.predictor, self.future_steps = encoder, predictor, future_steps

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.encoder.config
        context = self.encoder.tokens(pixel_values)  # (B, Nc, E)
        steps = pixel_values.shape[2] // cfg.tubelet
        per_step = context.shape[1] // steps
        grid = (steps + self.future_steps, cfg.grid, cfg.grid)
        predicted = self.predictor(context, self.future_steps * per_step, grid)
        return predicted, context.mean(dim=1)
