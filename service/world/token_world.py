"""V-JEPA 2-AC's family: frames' token grids + end-effector poses (`proprio`) + actions -> the next frame's tokens.
Every observation frame is encoded on its own, and each comes with the pose at it; a plan goes toward a goal
image's tokens (L1, the paper's energy)."""

from __future__ import annotations

import functools
import time

import numpy as np

from service.errors import ErrorCode, UnprocessableInput
from service.world.acting import ActionWorld, PlanningAids, Problem
from service.world.encoding import Encoder
from service.world.inputs import Rows, WorldLimits, check_proprio, refuse_context
from service.world.model import (
    FRAMES,
    VIDEO_FRAMES,
    Observation,
    ObservationNeed,
    PlanInputs,
    PlanQuery,
    PredictInputs,
    Prediction,
    PredictQuery,
    Scored,
    SurpriseInputs,
    SurpriseQuery,
    elapsed_ms,
)
from service.world.planner import CEMConfig
from service.world.streams import TokenSurpriseStream
from service.world.surprise import TokenSurprise
from service.world.token_rollout import TokenRollout, TokenState


class TokenWorld(ActionWorld):
    scorer: TokenSurprise | None
    rollout: TokenRollout

    def __init__(self, name: str, encoder: Encoder, limits: WorldLimits, rollout: TokenRollout,
                 scorer: TokenSurprise | None, planning: PlanningAids) -> None:
        super().__init__(name, encoder, limits, rollout, scorer, planning)

    def how_to_calibrate(self) -> str:
        return ("export it again with `jepa-export vjepa2 CHECKPOINT --surprise-trajectories FOLDER`, a folder of "
                ".npz trajectories of normal behaviour (frames, poses, actions; see docs/models.md)")

    def _proprio(self, values: Rows | None, per: str) -> np.ndarray:
        """The end-effector state at each observation frame: required, each a proprio_dim row of float32s."""
        dim = self.spec.proprio_dim
        if values is None:
            raise UnprocessableInput(f"model {self.name!r} needs 'proprio': {per}", {"proprio_dim": dim},
                                     code=ErrorCode.INVALID_PROPRIO)
        return check_proprio(values, dim)

    async def _observe(self, frames: np.ndarray, poses: np.ndarray, deadline: float | None) -> TokenState:
        """Decoded frames (n, 3, H, W) and the pose at each -> the observed history (each frame encoded alone)."""
        self.rollout.check_poses(poses, len(frames))  # before encoding: one pose per decoded frame
        return self.rollout.start_state(await self.encoder.frame_tokens(frames, deadline), poses)

    def check_prediction(self, inputs: PredictInputs) -> PredictQuery:
        actions = self.rollout_actions(inputs.actions)
        self.check_context(inputs.context)
        refuse_context(inputs.state is not None,
                       f"model {self.name!r} rolls out from context frames (and proprio), not a state")
        proprio = self._proprio(inputs.proprio, "one end-effector state per context frame")
        return PredictQuery(FRAMES, actions, proprio=proprio, tokens=inputs.tokens)

    async def predict(self, query: PredictQuery, observation: Observation | None,
                      deadline: float | None = None) -> Prediction:
        """Frames + end-effector states + actions -> the next frames' tokens, autoregressively."""
        assert observation is not None
        assert query.actions is not None
        assert query.proprio is not None
        started = time.perf_counter()
        start = await self._observe(observation.pixels, query.proprio, deadline)
        encode_ms = elapsed_ms(started)
        started = time.perf_counter()
        out = await self.rollout.trajectories(start, query.actions[None], deadline)
        predicted = out.tokens[0]  # (H, P, D)
        return Prediction(initial_state=start.tokens[-1].mean(axis=0), states=predicted.mean(axis=1),
                          timings_ms={"encode": encode_ms, "rollout": elapsed_ms(started)},
                          tokens=predicted if query.tokens else None, poses=out.poses[0])

    def check_plan_start(self, inputs: PlanInputs, config: CEMConfig, subspace: str) -> PlanQuery:
        if inputs.goal_state is not None:
            raise UnprocessableInput(f"model {self.name!r} plans toward a goal image, not a goal_state",
                                     code=ErrorCode.INVALID_PLAN)
        proprio = self._proprio(inputs.proprio, "one end-effector state per observation frame")
        return PlanQuery(FRAMES, config, subspace, proprio=proprio)

    async def problem(self, query: PlanQuery, observation: Observation, goal: Observation | None,
                      deadline: float | None) -> Problem:
        assert goal is not None
        assert query.proprio is not None
        start = await self._observe(observation.pixels, query.proprio, deadline)
        goal_tokens = await self.encoder.frame_tokens(goal.pixels, deadline)
        target = self.rollout.frame_tokens(goal_tokens)[-1].reshape(-1)  # layer-normed, flattened
        dim = goal_tokens.shape[-1]
        simulate = functools.partial(self.rollout.simulate, start, deadline=deadline)
        return Problem(simulate=simulate, goal=target,
                       summarize=lambda states: states.reshape(len(states), -1, dim).mean(axis=1),
                       start_pose=start.poses[-1])

    def check_surprise(self, inputs: SurpriseInputs) -> SurpriseQuery:
        """Frame t + 1 against its prediction from the observed frames up to t (teacher-forced, the last
        context_frames of them), their poses and the actions between them."""
        self.require_scorer()
        refuse_context(inputs.states is not None, f"model {self.name!r} scores frames (their token grids): give "
                       "'observations', not pooled states")
        actions = self.actions(inputs.actions, self.limits.max_surprise_steps, "max_surprise_steps",
                               within_box=False, hint=", one between each two observations")
        proprio = self._proprio(inputs.proprio, "the end-effector state at each observation frame")
        if len(proprio) != len(actions) + 1:
            raise UnprocessableInput(
                f"{len(proprio)} observations (proprio) need {len(proprio) - 1} actions (one between each two); "
                f"got {len(actions)}", {"proprio": len(proprio), "actions": len(actions)},
                code=ErrorCode.INVALID_ACTION)
        return SurpriseQuery(self.threshold(inputs.threshold), ObservationNeed(video_frames=VIDEO_FRAMES),
                             actions=actions, proprio=proprio)

    async def surprise(self, query: SurpriseQuery, observation: Observation | None,
                       deadline: float | None = None) -> Scored:
        scorer = self.require_scorer()
        assert observation is not None
        assert query.actions is not None
        assert query.proprio is not None
        started = time.perf_counter()
        observed = await self._observe(observation.pixels, query.proprio, deadline)
        encode_ms = elapsed_ms(started)
        started = time.perf_counter()
        result = await scorer.score(observed, query.actions, deadline)
        timings = {"encode": encode_ms, "predict": elapsed_ms(started)}
        if not np.isfinite(result.scores).all():
            raise UnprocessableInput("the poses or actions are too large: the predictor's output overflowed",
                                     code=ErrorCode.INVALID_PROPRIO)
        return Scored(np.arange(1, len(query.actions) + 1), result, query.threshold, scorer.spec, timings)

    def open_stream(self, threshold: float | None = None) -> TokenSurpriseStream:
        scorer = self.require_scorer()

        async def encode(frame: np.ndarray) -> np.ndarray:  # every frame encoded alone (a clip of itself)
            return (await self.encoder.frame_tokens(frame[None]))[0]

        return TokenSurpriseStream(scorer, encode, self.threshold(threshold))
