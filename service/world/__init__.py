from service.world.planner import CEMConfig, Plan, plan_cem
from service.world.rollout import LatentRollout

__all__ = ["CEMConfig", "LatentRollout", "Plan", "plan_cem"]
