from service.world.rollout import LatentRollout

__all__ = ["LatentRollout"]
