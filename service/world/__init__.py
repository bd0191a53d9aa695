from service.world.future import FuturePredictor
from service.world.planner import CEMConfig, Plan
from service.world.probe import ProbeHead, Ranked
from service.world.rollout import LatentRollout
from service.world.surprise import (
    FutureSurprise,
    StreamStep,
    Surprise,
    SurpriseScorer,
    SurpriseStream,
    TokenSurprise,
    TokenSurpriseStream,
)
from service.world.token_rollout import TokenRollout

__all__ = [
    "CEMConfig", "FuturePredictor", "FutureSurprise", "LatentRollout", "Plan", "ProbeHead", "Ranked", "StreamStep",
    "Surprise", "SurpriseScorer", "SurpriseStream", "TokenRollout", "TokenSurprise", "TokenSurpriseStream",
]
