"""The demo JEPA: a small ViT context encoder and an action-conditioned predictor.

Until trained demo weights are shipped, the demo model is a fixed-seed
initialisation: deterministic, so its exported embedding space id is stable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.predictor import ActionConditionedPredictor, PredictorConfig
from models.vit import ViTConfig, ViTEncoder

DEMO_MEAN = (0.5, 0.5, 0.5)
DEMO_STD = (0.25, 0.25, 0.25)
DEMO_ACTION_BOUND = 1.0


@dataclass
class DemoModel:
    encoder: ViTEncoder
    predictor: ActionConditionedPredictor
    mean: tuple[float, float, float] = DEMO_MEAN
    std: tuple[float, float, float] = DEMO_STD
    action_bound: float = DEMO_ACTION_BOUND


def build_demo_model(seed: int = 0) -> DemoModel:
    encoder_config = ViTConfig()
    predictor_config = PredictorConfig(dim=encoder_config.dim)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        encoder = ViTEncoder(encoder_config)
        predictor = ActionConditionedPredictor(predictor_config)
    finally:
        torch.random.set_rng_state(generator_state)
    return DemoModel(encoder=encoder.eval(), predictor=predictor.eval())
