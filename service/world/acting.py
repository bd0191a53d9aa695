"""What the action-conditioned families (pooled predictors, V-JEPA 2-AC) share: the action contract, the context
length, and planning by CEM on the predictor (service/world/planner.py), toward a goal each family states in its
own terms (a pooled state, a token grid)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from contract import PlanningSpec, PredictorSpec
from service.errors import ErrorCode, UnprocessableInput
from service.world.encoding import Encoder
from service.world.inputs import Rows, WorldLimits, check_actions, check_step_count
from service.world.model import (
    Observation,
    PlanInputs,
    PlanOutcome,
    PlanQuery,
    Scorer,
    WorldModel,
    elapsed_ms,
)
from service.world.planner import CEMConfig, default_elites, plan_sequences, trajectory_cost
from service.world.pose import apply_action
from service.world.rollout import ActionConditioned

CEM_DEFAULTS = CEMConfig()
SIZES = ("horizon", "samples", "iterations")


@dataclass(frozen=True)
class PlanningAids:
    """What a model ships for /plan (export/planning.py): its manifest's planning section and the matrices it
    names, loaded and checked at start-up."""

    spec: PlanningSpec | None = None
    controllable: np.ndarray | None = None  # (k, D) projection onto the action-controllable subspace
    action_readout: np.ndarray | None = None  # (A, D) linear inverse model: a planning cost with a global slope

    def cost_space(self, requested: str, model: str) -> tuple[str, np.ndarray | None]:
        """The requested (or, for 'auto', the best shipped) space the plan cost compares states in, and its matrix.

        'readout_and_controllable' stacks the readout rows, scaled by sqrt(k / A), over the k controllable rows, so
        the mean square over all rows is proportional to the sum of the two mean-square distances: the readout
        gives the slope far from the goal, the controllable subspace the precision near it.
        """
        both = None
        if self.action_readout is not None and self.controllable is not None:
            scale = np.sqrt(self.controllable.shape[0] / self.action_readout.shape[0])
            both = np.concatenate([self.action_readout * scale, self.controllable]).astype(np.float32)
        shipped = {"readout_and_controllable": both, "action_readout": self.action_readout,
                   "controllable": self.controllable}
        if requested == "auto":
            requested = next((name for name, matrix in shipped.items() if matrix is not None), "full")
        if requested == "full":
            return "full", None
        if shipped[requested] is None:
            raise UnprocessableInput(f"model {model!r} ships no {requested.replace('_', ' ')}",
                                     code=ErrorCode.INVALID_PLAN)
        return requested, shipped[requested]


@dataclass(frozen=True)
class Problem:
    """What CEM needs: a simulator from the observed start, the goal, and how to report predicted states."""

    simulate: Callable[[np.ndarray], Awaitable[np.ndarray]]  # actions (S, H, A) -> features (S, H, F)
    goal: np.ndarray  # (F,)
    summarize: Callable[[np.ndarray], np.ndarray]  # (H, F) features -> (H, D) states for the response
    start_pose: np.ndarray | None = None  # the end-effector state the plan starts from (V-JEPA 2-AC)


def _bounded(name: str, value: int, limit: int) -> None:
    if value > limit:
        raise UnprocessableInput(f"{name} {value} is above the limit of {limit}", {f"max_plan_{name}": limit},
                                 code=ErrorCode.INVALID_PLAN)


class ActionWorld(WorldModel):
    def __init__(self, name: str, encoder: Encoder, limits: WorldLimits, rollout: ActionConditioned,
                 scorer: Scorer | None, planning: PlanningAids) -> None:
        super().__init__(name, encoder, limits, scorer)
        self.rollout = rollout
        self.planning = planning

    @property
    def spec(self) -> PredictorSpec:
        return self.rollout.spec

    def actions(self, values: Rows | None, limit: int, setting: str, within_box: bool = True,
                hint: str = "") -> np.ndarray:
        """The request's actions: given, at most `limit` of them (the setting that says so), each checked."""
        if values is None:
            raise UnprocessableInput(f"model {self.name!r} is action-conditioned: give 'actions'{hint}",
                                     code=ErrorCode.INVALID_ACTION)
        check_step_count(len(values), limit, setting)
        return check_actions(values, self.spec, within_box)

    def rollout_actions(self, values: Rows | None) -> np.ndarray:
        return self.actions(values, self.limits.max_rollout_steps, "max_rollout_steps")

    def check_context(self, frames: int, what: str = "context") -> None:
        """At most the predictor's context length of media items (each one frame, or a clip of several)."""
        if frames > self.spec.context_frames:
            raise UnprocessableInput(
                f"model {self.name!r} takes up to {self.spec.context_frames} {what} frame(s); got {frames}",
                {"context_frames": self.spec.context_frames}, code=ErrorCode.INVALID_CONTEXT)

    def _sizes(self, inputs: PlanInputs) -> dict[str, int]:
        """The request's CEM sizes, else the model's (the paper's for V-JEPA 2-AC), else ours; all bounded."""
        model_defaults = dict(self.planning.spec.defaults) if self.planning.spec is not None else {}
        sizes = {name: getattr(inputs, name) or model_defaults.get(name, getattr(CEM_DEFAULTS, name))
                 for name in SIZES}
        # a model's default top-k never exceeds the samples asked for; an explicit `elites` is checked by the schema
        sizes["elites"] = inputs.elites or min(
            model_defaults.get("elites") or default_elites(sizes["samples"]), sizes["samples"])
        _bounded("horizon", sizes["horizon"], self.limits.max_plan_horizon)
        _bounded("samples", sizes["samples"], self.limits.max_plan_samples)
        _bounded("iterations", sizes["iterations"], self.limits.max_plan_iterations)
        if sizes["elites"] > sizes["samples"]:  # elites given, samples not
            raise UnprocessableInput("elites must not exceed samples", code=ErrorCode.INVALID_PLAN)
        return sizes

    def check_plan(self, inputs: PlanInputs) -> PlanQuery:
        sizes = self._sizes(inputs)
        self.check_context(inputs.observation, "observation")
        subspace, _ = self.planning.cost_space(inputs.subspace, self.name)
        distance = inputs.distance
        if distance == "auto":
            distance = self.planning.spec.distance if self.planning.spec is not None else "l2"
        config = CEMConfig(**sizes, cost=inputs.cost, distance=distance, action_repeat=inputs.action_repeat,
                           seed=inputs.seed)
        return self.check_plan_start(inputs, config, subspace)

    def check_plan_start(self, inputs: PlanInputs, config: CEMConfig, subspace: str) -> PlanQuery:
        """The family's part of a plan's checks: what the plan starts from and where it goes."""
        raise NotImplementedError

    async def problem(self, query: PlanQuery, observation: Observation, goal: Observation | None,
                      deadline: float | None) -> Problem:
        """The family's part of a plan: the observed start, the goal, a simulator from one to the other."""
        raise NotImplementedError

    async def plan(self, query: PlanQuery, observation: Observation, goal: Observation | None,
                   deadline: float | None = None) -> PlanOutcome:
        started = time.perf_counter()
        problem = await self.problem(query, observation, goal, deadline)
        encode_ms = elapsed_ms(started)
        encoded = time.perf_counter()
        _, projection = self.planning.cost_space(query.subspace, self.name)
        config = query.config
        low = np.asarray(self.spec.action_low, np.float32)
        high = np.asarray(self.spec.action_high, np.float32)
        result = await plan_sequences(problem.simulate, problem.goal, low, high, config, projection)
        stay = np.clip(np.zeros((1, config.horizon, len(low)), np.float32), low, high)
        stay_cost = trajectory_cost(await problem.simulate(stay), problem.goal, projection, config.cost,
                                    config.distance)
        poses = None if problem.start_pose is None else pose_path(problem.start_pose, result.actions)
        return PlanOutcome(actions=result.actions, cost=result.cost, zero_action_cost=float(stay_cost[0]),
                           states=problem.summarize(result.states), iteration_costs=result.iteration_costs,
                           timings_ms={"encode": encode_ms, "plan": elapsed_ms(encoded)}, poses=poses)


def pose_path(start: np.ndarray, actions: Sequence[np.ndarray]) -> np.ndarray:
    """The end-effector state after each action, from `start` (poses add, rotations compose: pose.apply_action)."""
    poses, pose = [], start
    for action in actions:
        pose = apply_action(pose, action)
        poses.append(pose)
    return np.stack(poses)
