"""POST /predict_future: latent rollout of future state embeddings from frames or a state."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.encoding import encode_array
from service.api.observations import observe_inputs, sampling_echo, with_decode
from service.api.schemas import COMMON_ERRORS, PredictRequest, PredictResponse, error_responses
from service.world import PredictInputs

router = APIRouter(tags=["world"], responses=error_responses(*COMMON_ERRORS, 404))


@router.post("/predict_future", response_model=PredictResponse)
async def predict_future(
    body: PredictRequest, services: ReadyServicesDep, request_deadline: DeadlineDep
) -> PredictResponse:
    deadline = request_deadline.at(body.timeout_ms)
    model = services.models.resolve_model(body.model, services.config.models.default)
    query = model.world.check_prediction(PredictInputs(
        context=len(body.context or ()), state=body.state, actions=body.actions, proprio=body.proprio,
        tokens=body.output == "tokens"))
    observation = None
    if query.observation is not None:
        assert body.context is not None
        observation = await observe_inputs(services, model, body.context, query.observation, body)
    predicted = await model.world.predict(query, observation, deadline)
    echo = sampling_echo(observation)
    return PredictResponse(
        model=model.name, space_id=model.manifest.space_id, initial_state=predicted.initial_state.tolist(),
        states=predicted.states.tolist(),
        tokens=None if predicted.tokens is None else encode_array(predicted.tokens, body.encoding, body.dtype),
        proprio=None if predicted.poses is None else predicted.poses.tolist(),
        sampling=echo[0] if echo is not None and len(echo) == 1 else None,
        timings_ms=with_decode(predicted.timings_ms, observation),
    )
