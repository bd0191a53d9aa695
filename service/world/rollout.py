"""Latent rollout: apply the action-conditioned predictor step by step in embedding space.

Every step goes through the predictor's DynamicBatcher, so the steps of many
concurrent rollouts share predictor batches.
"""

from __future__ import annotations

import functools

import numpy as np

from contract import PredictorSpec
from service.batching import DynamicBatcher
from service.world.planner import rollout_batch


class ActionConditioned:
    """What every action-conditioned predictor shares: its batcher and its contract (action size and box).
    Its inputs are checked before they get here (service/world/inputs.py)."""

    def __init__(self, batcher: DynamicBatcher, spec: PredictorSpec) -> None:
        self._batcher = batcher
        self.spec = spec


class LatentRollout(ActionConditioned):
    """(pooled state, action) -> next pooled state, one predictor call per step (the demo's contract)."""

    async def rollout(self, state: np.ndarray, actions: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """state (D,), actions (T, A) -> predicted states after each step (T, D)."""
        states = []
        current = state
        for action in actions:
            (out,) = await self._batcher.infer([{"state": current, "action": action}], deadline=deadline)
            current = out["next_state"]
            states.append(current)
        return np.stack(states) if states else np.zeros((0, state.shape[0]), np.float32)

    async def step_batch(self, states: np.ndarray, actions: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """states (S, D), actions (S, A) -> next states (S, D), all S rows queued together (one batch)."""
        items = [{"state": s, "action": a} for s, a in zip(states, actions, strict=True)]
        outputs = await self._batcher.infer(items, deadline=deadline)
        return np.stack([o["next_state"] for o in outputs])

    async def simulate(self, start: np.ndarray, actions: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """start (D,), actions (S, H, A) -> states (S, H, D): H predictor batches of S rows."""
        return await rollout_batch(functools.partial(self.step_batch, deadline=deadline), start, actions)
