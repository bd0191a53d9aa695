"""Latent rollout: apply the action-conditioned predictor step by step in embedding space.

Every step goes through the predictor's DynamicBatcher, so the steps of many
concurrent rollouts share predictor batches.
"""

from __future__ import annotations

import functools

import numpy as np

from contract import PredictorSpec
from service.batching import DynamicBatcher
from service.errors import ErrorCode, UnprocessableInput
from service.world.planner import rollout_batch


class ActionConditioned:
    """What every action-conditioned predictor shares: its contract and the action box it was trained on."""

    def __init__(self, batcher: DynamicBatcher, spec: PredictorSpec) -> None:
        self._batcher = batcher
        self.spec = spec
        self._low = np.asarray(spec.action_low, np.float32)
        self._high = np.asarray(spec.action_high, np.float32)

    def check_actions(self, actions: np.ndarray, within_box: bool = True) -> np.ndarray:
        """(T, action_dim) finite and (within_box) inside the action box the predictor was trained on.

        V-JEPA 2-AC's box is where its planner searches, not what a recorded arm does (wrists turn): actions
        observed in a trajectory (/surprise) are checked for size and finiteness only."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != self.spec.action_dim:
            raise UnprocessableInput(
                f"each action must have {self.spec.action_dim} values",
                {"action_dim": self.spec.action_dim},
                code=ErrorCode.INVALID_ACTION,
            )
        if not np.isfinite(actions).all():
            raise UnprocessableInput("actions contain NaN or Inf", code=ErrorCode.INVALID_ACTION)
        if within_box and ((actions < self._low).any() or (actions > self._high).any()):
            raise UnprocessableInput(
                "actions outside the model's action range",
                {"action_low": self.spec.action_low, "action_high": self.spec.action_high},
                code=ErrorCode.INVALID_ACTION,
            )
        return actions


class LatentRollout(ActionConditioned):
    """(pooled state, action) -> next pooled state, one predictor call per step (the demo's contract)."""

    def check_state(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (self.spec.state_dim,):
            raise UnprocessableInput(
                f"state must have {self.spec.state_dim} values; got shape {list(state.shape)}",
                {"state_dim": self.spec.state_dim},
                code=ErrorCode.DIMENSION_MISMATCH,
            )
        if not np.isfinite(state).all():
            raise UnprocessableInput("state contains NaN or Inf", code=ErrorCode.INVALID_VECTOR)
        return state

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
