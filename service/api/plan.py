"""POST /plan: observation + goal -> an action sequence by CEM on the served latent predictor."""

from __future__ import annotations

import functools
import time

import numpy as np
from fastapi import APIRouter, Header

from service.api.deps import ReadyServicesDep
from service.api.media_inputs import embed_observation, request_deadline, resolve_world_model
from service.api.schemas import COMMON_ERRORS, PlanRequest, PlanResponse, error_responses
from service.errors import UnprocessableInput
from service.model_pool import ServedModel
from service.world.planner import CEMConfig, plan_cem, rollout_batch, trajectory_cost

router = APIRouter(tags=["world"], responses=error_responses(*COMMON_ERRORS, 404))


def _bounded(name: str, value: int, limit: int) -> None:
    if value > limit:
        raise UnprocessableInput(f"{name} {value} is above the limit of {limit}", {f"max_plan_{name}": limit},
                                 code="invalid_plan")


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
        raise UnprocessableInput(f"model {model.name!r} ships no {requested.replace('_', ' ')}", code="invalid_plan")
    return requested, shipped[requested]


@router.post("/plan", response_model=PlanResponse, summary="Plan actions toward a goal image by CEM in latent space")
async def plan(
    body: PlanRequest, services: ReadyServicesDep, x_request_timeout_ms: str | None = Header(None)
) -> PlanResponse:
    settings = services.settings
    deadline = request_deadline(x_request_timeout_ms, body.timeout_ms, settings)
    model, rollout = resolve_world_model(services, body.model)
    _bounded("horizon", body.horizon, settings.max_plan_horizon)
    _bounded("samples", body.samples, settings.max_plan_samples)
    _bounded("iterations", body.iterations, settings.max_plan_iterations)
    if len(body.observation) > rollout.spec.context_frames:
        raise UnprocessableInput(
            f"model {model.name!r} takes up to {rollout.spec.context_frames} observation frame(s)",
            {"context_frames": rollout.spec.context_frames}, code="invalid_context",
        )
    subspace, projection = cost_space(model, body.subspace)
    started = time.perf_counter()
    observed = await embed_observation(services, model, body.observation, deadline)
    # Every CEM step carries the request's deadline: past it, queued samples are dropped and the answer is 504.
    step = functools.partial(rollout.step_batch, deadline=deadline)
    if body.goal_state is not None:
        goal = rollout.check_state(np.asarray(body.goal_state, np.float32))
    else:
        assert body.goal is not None
        goal = (await embed_observation(services, model, [body.goal], deadline)).state
    encoded = time.perf_counter()
    config = CEMConfig(
        horizon=body.horizon, samples=body.samples, iterations=body.iterations,
        elites=body.elites or max(body.samples // 8, 1), cost=body.cost,
        action_repeat=body.action_repeat, seed=body.seed,
    )
    low = np.asarray(rollout.spec.action_low, np.float32)
    high = np.asarray(rollout.spec.action_high, np.float32)
    result = await plan_cem(step, observed.state, goal, low, high, config, projection)
    stay = np.clip(np.zeros((1, body.horizon, len(low)), np.float32), low, high)
    stay_cost = trajectory_cost(await rollout_batch(step, observed.state, stay), goal, projection, body.cost)
    done = time.perf_counter()
    return PlanResponse(
        model=model.name,
        space_id=model.manifest.space_id,
        actions=result.actions.tolist(),
        cost=result.cost,
        zero_action_cost=float(stay_cost[0]),
        predicted_states=result.states.tolist(),
        iteration_costs=result.iteration_costs,
        subspace=subspace,
        timings_ms={"encode": round((encoded - started) * 1000, 3), "plan": round((done - encoded) * 1000, 3)},
    )
