from service.world.future import FuturePredictor
from service.world.planner import CEMConfig, Plan
from service.world.rollout import LatentRollout
from service.world.token_rollout import TokenRollout

__all__ = ["CEMConfig", "FuturePredictor", "LatentRollout", "Plan", "TokenRollout"]
