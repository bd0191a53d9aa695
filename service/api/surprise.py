"""POST /surprise: observations + actions -> how surprising each step is to the model's predictor."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.observations import observe_inputs, sampling_echo, with_decode
from service.api.schemas import COMMON_ERRORS, SurpriseCalibration, SurpriseRequest, SurpriseResponse, error_responses
from service.world import SurpriseInputs

router = APIRouter(tags=["world"], responses=error_responses(*COMMON_ERRORS, 404))


@router.post("/surprise", response_model=SurpriseResponse)
async def surprise(
    body: SurpriseRequest, services: ReadyServicesDep, request_deadline: DeadlineDep
) -> SurpriseResponse:
    deadline = request_deadline.at(body.timeout_ms)
    model = services.models.resolve_model(body.model, services.config.models.default)
    query = model.world.check_surprise(SurpriseInputs(
        observations=len(body.observations or ()), states=body.states, actions=body.actions, proprio=body.proprio,
        threshold=body.threshold))
    observation = None
    if query.observation is not None:
        assert body.observations is not None
        observation = await observe_inputs(services, model, body.observations, query.observation, body)
    scored = await model.world.surprise(query, observation, deadline)
    return SurpriseResponse(
        model=model.name, space_id=model.manifest.space_id, steps=scored.steps.tolist(),
        scores=scored.surprise.scores.tolist(), distances=scored.surprise.distances.tolist(),
        threshold=scored.threshold, surprising=scored.surprising.tolist(),
        calibration=SurpriseCalibration.model_validate(scored.calibration, from_attributes=True),
        sampling=sampling_echo(observation), timings_ms=with_decode(scored.timings_ms, observation),
    )
