"""Action-conditioned latent predictor: (state embedding, action) -> next state embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class PredictorConfig:
    dim: int = 128
    action_dim: int = 2
    hidden: int = 256
    depth: int = 2
    norm_eps: float = 1e-6


class ActionConditionedPredictor(nn.Module):
    """Residual MLP: next = state + f(LayerNorm(state), action).

    Predicting a residual keeps an untrained predictor close to "nothing
    changes", which is the right prior for one small step of the world.
    """

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        layers: list[nn.Module] = []
        width = config.dim + config.action_dim
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden), nn.GELU()]
            width = config.hidden
        layers.append(nn.Linear(width, config.dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        # state (B, D), action (B, A) -> (B, D)
        return state + self.mlp(torch.cat([self.norm(state), action], dim=-1))
