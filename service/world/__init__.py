"""World models: the predictors behind /predict_future, /plan, /surprise and the surprise stream, one interface
(service/world/model.py) over three families, plus the probe heads."""

from service.world.acting import ActionWorld, PlanningAids
from service.world.encoding import Encoder
from service.world.future import FuturePredictor
from service.world.future_world import FutureWorld
from service.world.inputs import WorldLimits
from service.world.model import (
    EncoderOnly,
    FrameStream,
    Observation,
    ObservationNeed,
    PlanInputs,
    PredictInputs,
    SurpriseInputs,
    WorldModel,
)
from service.world.planner import CEMConfig, Plan
from service.world.pooled_world import PooledWorld
from service.world.probe import ProbeHead, Ranked
from service.world.rollout import LatentRollout
from service.world.streams import StreamReady, StreamStep
from service.world.surprise import FutureSurprise, Surprise, SurpriseScorer, TokenSurprise
from service.world.token_rollout import TokenRollout
from service.world.token_world import TokenWorld

__all__ = [
    "ActionWorld", "CEMConfig", "Encoder", "EncoderOnly", "FrameStream", "FuturePredictor", "FutureSurprise",
    "FutureWorld", "LatentRollout", "Observation", "ObservationNeed", "Plan", "PlanInputs", "PlanningAids",
    "PooledWorld", "PredictInputs", "ProbeHead", "Ranked", "StreamReady", "StreamStep", "Surprise", "SurpriseInputs",
    "SurpriseScorer", "TokenRollout", "TokenSurprise", "TokenWorld", "WorldLimits", "WorldModel",
]
