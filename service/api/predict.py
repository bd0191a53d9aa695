"""POST /predict_future: latent rollout of future state embeddings from frames or a state."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Header

from service.api.deps import ReadyServicesDep
from service.api.media_inputs import embed_observation, request_deadline, resolve_world_model
from service.api.schemas import COMMON_ERRORS, PredictRequest, PredictResponse, error_responses
from service.errors import PayloadTooLarge, UnprocessableInput

router = APIRouter(tags=["world"], responses=error_responses(*COMMON_ERRORS, 404))


@router.post("/predict_future", response_model=PredictResponse)
async def predict_future(
    body: PredictRequest, services: ReadyServicesDep, x_request_timeout_ms: str | None = Header(None)
) -> PredictResponse:
    settings = services.settings
    deadline = request_deadline(x_request_timeout_ms, body.timeout_ms, settings)
    model, rollout = resolve_world_model(services, body.model)
    if len(body.actions) > settings.max_rollout_steps:
        raise PayloadTooLarge(
            f"{len(body.actions)} actions; the limit is {settings.max_rollout_steps}", code="too_many_steps"
        )
    try:
        actions = rollout.check_actions(np.asarray(body.actions, dtype=np.float32))
    except ValueError as exc:
        raise UnprocessableInput("actions must all have the same length", code="invalid_action") from exc
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if body.state is not None:
        state = rollout.check_state(np.asarray(body.state, dtype=np.float32))
    else:
        assert body.context is not None
        frames = rollout.spec.context_frames
        if len(body.context) > frames:
            raise UnprocessableInput(
                f"model {model.name!r} takes up to {frames} context frame(s); got {len(body.context)}",
                {"context_frames": frames},
                code="invalid_context",
            )
        observed = await embed_observation(services, model, body.context, deadline)
        state = observed.state
        timings = {"decode": round(observed.decode_ms, 3), "encode": round(observed.inference_ms, 3)}
        started = time.perf_counter()
    states = await rollout.rollout(state, actions, deadline)
    timings["rollout"] = round((time.perf_counter() - started) * 1000, 3)
    return PredictResponse(
        model=model.name, space_id=model.manifest.space_id, initial_state=state.tolist(), states=states.tolist(),
        timings_ms=timings,
    )
