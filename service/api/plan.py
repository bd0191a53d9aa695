"""POST /plan: observation + goal -> an action sequence by CEM on the served latent predictor.

Pooled-state predictors (the demo) compare pooled embeddings, optionally in the
manifest's controllable subspace; V-JEPA 2-AC compares predicted token grids
with the goal frame's (L1, the paper's energy) and takes the end-effector state
of each observation frame. The CEM loop is the same (service/world/acting.py, planner.py).
"""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.observations import observe_inputs, with_decode
from service.api.schemas import COMMON_ERRORS, PlanRequest, PlanResponse, error_responses
from service.world import PlanInputs

router = APIRouter(tags=["world"], responses=error_responses(*COMMON_ERRORS, 404))


@router.post("/plan", response_model=PlanResponse, summary="Plan actions toward a goal image by CEM in latent space")
async def plan(body: PlanRequest, services: ReadyServicesDep, request_deadline: DeadlineDep) -> PlanResponse:
    deadline = request_deadline.at(body.timeout_ms)
    model = services.models.resolve_model(body.model, services.config.models.default)
    query = model.world.check_plan(PlanInputs(
        observation=len(body.observation), goal_state=body.goal_state, proprio=body.proprio, horizon=body.horizon,
        samples=body.samples, iterations=body.iterations, elites=body.elites, cost=body.cost,
        distance=body.distance, action_repeat=body.action_repeat, subspace=body.subspace, seed=body.seed))
    observation = await observe_inputs(services, model, body.observation, query.observation)
    goal = None if body.goal is None else await observe_inputs(services, model, [body.goal], query.observation)
    planned = await model.world.plan(query, observation, goal, deadline)
    return PlanResponse(
        model=model.name,
        space_id=model.manifest.space_id,
        actions=planned.actions.tolist(),
        cost=planned.cost,
        zero_action_cost=planned.zero_action_cost,
        predicted_states=planned.states.tolist(),
        iteration_costs=planned.iteration_costs,
        subspace=query.subspace,
        distance=query.config.distance,
        settings=query.sizes,
        predicted_proprio=None if planned.poses is None else planned.poses.tolist(),
        timings_ms=with_decode(planned.timings_ms, observation, goal),
    )
