"""The pooled action-conditioned family: (pooled state, action) -> next pooled state, the demo's contract and the
one users' own world models follow. States are the encoder's pooled output; a clip model's state at a frame is
the clip of the frames up to it."""

from __future__ import annotations

import functools
import time

import numpy as np

from service.errors import ErrorCode, UnprocessableInput
from service.world.acting import ActionWorld, PlanningAids, Problem
from service.world.encoding import Encoder
from service.world.inputs import WorldLimits, check_state, check_states, refuse_proprio
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
from service.world.rollout import LatentRollout
from service.world.streams import SurpriseStream
from service.world.surprise import SurpriseScorer


class PooledWorld(ActionWorld):
    scorer: SurpriseScorer | None
    rollout: LatentRollout

    def __init__(self, name: str, encoder: Encoder, limits: WorldLimits, rollout: LatentRollout,
                 scorer: SurpriseScorer | None, planning: PlanningAids) -> None:
        super().__init__(name, encoder, limits, rollout, scorer, planning)

    def _refuse_proprio(self, given: bool) -> None:
        refuse_proprio(given, f"model {self.name!r}")

    def check_prediction(self, inputs: PredictInputs) -> PredictQuery:
        actions = self.rollout_actions(inputs.actions)
        self.check_context(inputs.context)
        if inputs.tokens:
            raise UnprocessableInput(f"model {self.name!r} predicts pooled states only",
                                     code=ErrorCode.NO_TOKENS_OUTPUT)
        self._refuse_proprio(inputs.proprio is not None)
        if inputs.state is None:
            return PredictQuery(FRAMES, actions)
        return PredictQuery(None, actions, state=check_state(inputs.state, self.spec.state_dim))

    async def predict(self, query: PredictQuery, observation: Observation | None,
                      deadline: float | None = None) -> Prediction:
        assert query.actions is not None
        timings: dict[str, float] = {}
        state = query.state
        if state is None:
            assert observation is not None
            started = time.perf_counter()
            state = await self.encoder.state(observation.pixels, deadline)
            timings["encode"] = elapsed_ms(started)
        started = time.perf_counter()
        states = await self.rollout.rollout(state, query.actions, deadline)
        timings["rollout"] = elapsed_ms(started)
        return Prediction(initial_state=state, states=states, timings_ms=timings)

    def check_plan_start(self, inputs: PlanInputs, config: CEMConfig, subspace: str) -> PlanQuery:
        self._refuse_proprio(inputs.proprio is not None)
        goal = None if inputs.goal_state is None else check_state(inputs.goal_state, self.spec.state_dim)
        return PlanQuery(FRAMES, config, subspace, goal_state=goal)

    async def problem(self, query: PlanQuery, observation: Observation, goal: Observation | None,
                      deadline: float | None) -> Problem:
        start = await self.encoder.state(observation.pixels, deadline)
        if query.goal_state is not None:
            target = query.goal_state
        else:
            assert goal is not None
            target = await self.encoder.state(goal.pixels, deadline)
        # Every CEM step carries the request's deadline: past it, queued samples are dropped and the answer is 504.
        simulate = functools.partial(self.rollout.simulate, start, deadline=deadline)
        return Problem(simulate=simulate, goal=target, summarize=lambda states: states)

    def check_surprise(self, inputs: SurpriseInputs) -> SurpriseQuery:
        """Each observed state against its prediction from the one before and the action between them."""
        self.require_scorer()
        self._refuse_proprio(inputs.proprio is not None)
        actions = self.actions(inputs.actions, self.limits.max_surprise_steps, "max_surprise_steps")
        threshold = self.threshold(inputs.threshold)
        if inputs.states is None:
            return SurpriseQuery(threshold, ObservationNeed(video_frames=VIDEO_FRAMES), actions=actions)
        states = check_states(inputs.states, self.spec.state_dim)
        self._check_steps(len(states), 0, len(actions))
        return SurpriseQuery(threshold, None, states=states, actions=actions)

    def _check_steps(self, observed: int, first: int, actions: int) -> None:
        """`observed` observations, the first state at observation `first`: one action between each two, and at
        least one scored step."""
        if actions != observed - 1:
            raise UnprocessableInput(
                f"{observed} observations need {observed - 1} actions (one between each two); got {actions}",
                {"observations": observed, "actions": actions}, code=ErrorCode.INVALID_ACTION)
        if observed - first < 2:
            raise UnprocessableInput(
                f"model {self.name!r} needs at least {first + 2} observations to score a step "
                f"(a state is a clip of {first + 1} frames); got {observed}",
                {"min_observations": first + 2}, code=ErrorCode.INVALID_CONTEXT)

    async def surprise(self, query: SurpriseQuery, observation: Observation | None,
                       deadline: float | None = None) -> Scored:
        scorer = self.require_scorer()
        assert query.actions is not None
        timings: dict[str, float] = {}
        states, first = query.states, 0
        if states is None:
            assert observation is not None
            frames, first = observation.pixels, self.encoder.window - 1
            self._check_steps(len(frames), first, len(query.actions))
            started = time.perf_counter()
            states = await self.encoder.states(frames, self.spec.state_dim, deadline)
            timings["encode"] = elapsed_ms(started)
        started = time.perf_counter()
        result = await scorer.score(states, query.actions[first:], deadline)
        timings["predict"] = elapsed_ms(started)
        if not np.isfinite(result.scores).all():
            raise UnprocessableInput("the states are too large: the predictor's output overflowed",
                                     code=ErrorCode.INVALID_VECTOR)
        steps = np.arange(first + 1, first + len(states))
        return Scored(steps, result, query.threshold, scorer.spec, timings)

    def open_stream(self, threshold: float | None = None) -> SurpriseStream:
        return SurpriseStream(self.require_scorer(), self.encoder.state, self.encoder.window, self.threshold(threshold))
