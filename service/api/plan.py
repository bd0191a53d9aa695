"""POST /plan: observation + goal -> an action sequence by CEM on the served latent predictor.

Pooled-state predictors (the demo) compare pooled embeddings, optionally in the
manifest's controllable subspace; V-JEPA 2-AC compares predicted token grids
with the goal frame's (L1, the paper's energy) and takes the end-effector state
of each observation frame. The CEM loop is the same (service/world/planner.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.inputs import to_media_items
from service.api.schemas import COMMON_ERRORS, PlanRequest, PlanResponse, error_responses
from service.errors import ErrorCode, UnprocessableInput
from service.model_pool import ServedModel
from service.pipeline import embed_observation, observe_tokens, require_rollout
from service.state import Services
from service.world import LatentRollout, TokenRollout
from service.world.planner import CEMConfig, plan_sequences, trajectory_cost
from service.world.pose import apply_action

router = APIRouter(tags=["world"], responses=error_responses(*COMMON_ERRORS, 404))

DEFAULTS = {"horizon": 8, "samples": 256, "iterations": 4}


@dataclass
class Problem:
    """What CEM needs: a simulator from the observed start, the goal, and how to report predicted states."""

    simulate: Callable[[np.ndarray], Awaitable[np.ndarray]]
    goal: np.ndarray
    summarize: Callable[[np.ndarray], np.ndarray]  # (H, F) features -> (H, D) states for the response
    start_pose: np.ndarray | None = None


def _bounded(name: str, value: int, limit: int) -> None:
    if value > limit:
        raise UnprocessableInput(f"{name} {value} is above the limit of {limit}", {f"max_plan_{name}": limit},
                                 code=ErrorCode.INVALID_PLAN)


def _sizes(body: PlanRequest, model: ServedModel, services: Services) -> dict[str, int]:
    """The request's CEM sizes, else the model's (the paper's for V-JEPA 2-AC), else ours; all bounded."""
    planning = model.manifest.planning
    model_defaults = dict(planning.defaults) if planning is not None else {}
    sizes = {name: getattr(body, name) or model_defaults.get(name, default) for name, default in DEFAULTS.items()}
    # a model's default top-k never exceeds the samples asked for; an explicit `elites` is checked by the schema
    sizes["elites"] = body.elites or min(model_defaults.get("elites") or max(sizes["samples"] // 8, 1), sizes["samples"])
    settings = services.settings
    _bounded("horizon", sizes["horizon"], settings.max_plan_horizon)
    _bounded("samples", sizes["samples"], settings.max_plan_samples)
    _bounded("iterations", sizes["iterations"], settings.max_plan_iterations)
    if sizes["elites"] > sizes["samples"]:
        raise UnprocessableInput("elites must not exceed samples", code=ErrorCode.INVALID_PLAN)  # elites given, samples not
    return sizes


def cost_space(model: ServedModel, requested: str) -> tuple[str, np.ndarray | None]:
    """The requested (or, for 'auto', the best shipped) space the plan cost compares states in, and its matrix.

    'readout_and_controllable' stacks the readout rows, scaled by sqrt(k / A), over the k controllable rows, so the
    mean square over all rows is proportional to the sum of the two mean-square distances: the readout gives the
    slope far from the goal, the controllable subspace the precision near it.
    """
    both = None
    if model.action_readout is not None and model.controllable is not None:
        scale = np.sqrt(model.controllable.shape[0] / model.action_readout.shape[0])
        both = np.concatenate([model.action_readout * scale, model.controllable]).astype(np.float32)
    shipped = {"readout_and_controllable": both, "action_readout": model.action_readout, "controllable": model.controllable}
    if requested == "auto":
        requested = next((name for name, matrix in shipped.items() if matrix is not None), "full")
    if requested == "full":
        return "full", None
    if shipped[requested] is None:
        raise UnprocessableInput(f"model {model.name!r} ships no {requested.replace('_', ' ')}", code=ErrorCode.INVALID_PLAN)
    return requested, shipped[requested]


@router.post("/plan", response_model=PlanResponse, summary="Plan actions toward a goal image by CEM in latent space")
async def plan(body: PlanRequest, services: ReadyServicesDep, request_deadline: DeadlineDep) -> PlanResponse:
    deadline = request_deadline.at(body.timeout_ms)
    model = services.models.resolve_model(body.model, services.settings.default_model)
    rollout = require_rollout(model)
    sizes = _sizes(body, model, services)
    if len(body.observation) > rollout.spec.context_frames:
        raise UnprocessableInput(
            f"model {model.name!r} takes up to {rollout.spec.context_frames} observation frame(s)",
            {"context_frames": rollout.spec.context_frames}, code=ErrorCode.INVALID_CONTEXT,
        )
    subspace, projection = cost_space(model, body.subspace)
    planning = model.manifest.planning
    distance = body.distance if body.distance != "auto" else (planning.distance if planning is not None else "l2")
    started = time.perf_counter()
    if isinstance(rollout, TokenRollout):
        problem = await _token_problem(services, model, rollout, body, deadline)
    else:
        problem = await _pooled_problem(services, model, rollout, body, deadline)
    encoded = time.perf_counter()
    config = CEMConfig(horizon=sizes["horizon"], samples=sizes["samples"], iterations=sizes["iterations"],
                       elites=sizes["elites"], cost=body.cost, distance=distance, action_repeat=body.action_repeat,
                       seed=body.seed)
    low = np.asarray(rollout.spec.action_low, np.float32)
    high = np.asarray(rollout.spec.action_high, np.float32)
    result = await plan_sequences(problem.simulate, problem.goal, low, high, config, projection)
    stay = np.clip(np.zeros((1, config.horizon, len(low)), np.float32), low, high)
    stay_cost = trajectory_cost(await problem.simulate(stay), problem.goal, projection, body.cost, distance)
    done = time.perf_counter()
    poses = None
    if problem.start_pose is not None:
        poses, pose = [], problem.start_pose
        for action in result.actions:
            pose = apply_action(pose, action)
            poses.append(pose.tolist())
    return PlanResponse(
        model=model.name,
        space_id=model.manifest.space_id,
        actions=result.actions.tolist(),
        cost=result.cost,
        zero_action_cost=float(stay_cost[0]),
        predicted_states=problem.summarize(result.states).tolist(),
        iteration_costs=result.iteration_costs,
        subspace=subspace,
        distance=distance,
        settings=sizes,
        predicted_proprio=poses,
        timings_ms={"encode": round((encoded - started) * 1000, 3), "plan": round((done - encoded) * 1000, 3)},
    )


async def _pooled_problem(
    services: Services, model: ServedModel, rollout: LatentRollout, body: PlanRequest, deadline: float | None
) -> Problem:
    observed = await embed_observation(services, model, to_media_items(body.observation, services.settings), deadline)
    if body.goal_state is not None:
        goal = rollout.check_state(np.asarray(body.goal_state, np.float32))
    else:
        assert body.goal is not None
        goal = (await embed_observation(services, model, to_media_items([body.goal], services.settings), deadline)).state
    # Every CEM step carries the request's deadline: past it, queued samples are dropped and the answer is 504.
    simulate = functools.partial(rollout.simulate, observed.state, deadline=deadline)
    return Problem(simulate=simulate, goal=goal, summarize=lambda states: states)


async def _token_problem(
    services: Services, model: ServedModel, rollout: TokenRollout, body: PlanRequest, deadline: float | None
) -> Problem:
    if body.goal is None:
        raise UnprocessableInput(f"model {model.name!r} plans toward a goal image, not a goal_state", code=ErrorCode.INVALID_PLAN)
    if body.proprio is None:
        raise UnprocessableInput(f"model {model.name!r} needs 'proprio': one end-effector state per observation frame",
                                 {"proprio_dim": rollout.spec.proprio_dim}, code=ErrorCode.INVALID_PROPRIO)
    tokens, _, _ = await observe_tokens(services, model, to_media_items(body.observation, services.settings), deadline)
    start = rollout.start_state(tokens, np.asarray(body.proprio, np.float32))
    goal_tokens, _, _ = await observe_tokens(services, model, to_media_items([body.goal], services.settings), deadline)
    goal = rollout.frame_tokens(goal_tokens)[-1].reshape(-1)  # layer-normed, flattened
    dim = tokens.shape[-1]
    simulate = functools.partial(rollout.simulate, start, deadline=deadline)
    return Problem(simulate=simulate, goal=goal,
                   summarize=lambda states: states.reshape(len(states), -1, dim).mean(axis=1),
                   start_pose=start.poses[-1])
