"""POST /predict_future: latent rollout of future state embeddings from frames or a state."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.encoding import encode_array
from service.api.inputs import frame_sampling, to_media_items
from service.api.schemas import COMMON_ERRORS, PredictRequest, PredictResponse, SampledFrames, error_responses
from service.errors import ErrorCode, PayloadTooLarge, UnprocessableInput
from service.model_pool import ServedModel
from service.pipeline import embed_observation, observe_clip, observe_tokens, require_rollout
from service.state import Services
from service.world import FuturePredictor, LatentRollout, TokenRollout

router = APIRouter(tags=["world"], responses=error_responses(*COMMON_ERRORS, 404))


@router.post("/predict_future", response_model=PredictResponse)
async def predict_future(body: PredictRequest, services: ReadyServicesDep, request_deadline: DeadlineDep) -> PredictResponse:
    settings = services.settings
    deadline = request_deadline.at(body.timeout_ms)
    model = services.models.resolve_model(body.model, settings.default_model)
    if model.rollout is None and model.future is not None:
        return await _predict_future_tokens(services, model, model.future, body, deadline)
    rollout = require_rollout(model)
    if body.actions is None:
        raise UnprocessableInput(f"model {model.name!r} is action-conditioned: give 'actions'", code=ErrorCode.INVALID_ACTION)
    if len(body.actions) > settings.max_rollout_steps:
        raise PayloadTooLarge(
            f"{len(body.actions)} actions; the limit is {settings.max_rollout_steps}", code=ErrorCode.TOO_MANY_STEPS
        )
    try:
        actions = rollout.check_actions(np.asarray(body.actions, dtype=np.float32))
    except ValueError as exc:
        raise UnprocessableInput("actions must all have the same length", code=ErrorCode.INVALID_ACTION) from exc
    if body.context is not None and len(body.context) > rollout.spec.context_frames:
        raise UnprocessableInput(
            f"model {model.name!r} takes up to {rollout.spec.context_frames} context frame(s); got {len(body.context)}",
            {"context_frames": rollout.spec.context_frames},
            code=ErrorCode.INVALID_CONTEXT,
        )
    if isinstance(rollout, TokenRollout):
        return await _predict_tokens(services, model, rollout, body, actions, deadline)
    if body.output == "tokens":
        raise UnprocessableInput(f"model {model.name!r} predicts pooled states only", code=ErrorCode.NO_TOKENS_OUTPUT)
    return await _predict_pooled(services, model, rollout, body, actions, deadline)


async def _predict_pooled(
    services: Services, model: ServedModel, rollout: LatentRollout, body: PredictRequest, actions: np.ndarray,
    deadline: float | None,
) -> PredictResponse:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if body.state is not None:
        state = rollout.check_state(np.asarray(body.state, dtype=np.float32))
    else:
        assert body.context is not None
        observed = await embed_observation(services, model, to_media_items(body.context, services.settings), deadline)
        state = observed.state
        timings = {"decode": round(observed.decode_ms, 3), "encode": round(observed.inference_ms, 3)}
        started = time.perf_counter()
    states = await rollout.rollout(state, actions, deadline)
    timings["rollout"] = round((time.perf_counter() - started) * 1000, 3)
    return PredictResponse(
        model=model.name, space_id=model.manifest.space_id, initial_state=state.tolist(), states=states.tolist(),
        timings_ms=timings,
    )


async def _predict_tokens(
    services: Services, model: ServedModel, rollout: TokenRollout, body: PredictRequest, actions: np.ndarray,
    deadline: float | None,
) -> PredictResponse:
    """V-JEPA 2-AC: frames + end-effector states + actions -> the next frames' tokens, autoregressively."""
    if body.context is None:
        raise UnprocessableInput(f"model {model.name!r} rolls out from context frames (and proprio), not a state",
                                 code=ErrorCode.INVALID_CONTEXT)
    if body.proprio is None:
        raise UnprocessableInput(f"model {model.name!r} needs 'proprio': one end-effector state per context frame",
                                 {"proprio_dim": rollout.spec.proprio_dim}, code=ErrorCode.INVALID_PROPRIO)
    items = to_media_items(body.context, services.settings)
    tokens, decode_ms, encode_ms = await observe_tokens(services, model, items, deadline)
    start = rollout.start_state(tokens, np.asarray(body.proprio, np.float32))
    started = time.perf_counter()
    out = await rollout.trajectories(start, actions[None], deadline)
    timings = {"decode": round(decode_ms, 3), "encode": round(encode_ms, 3),
               "rollout": round((time.perf_counter() - started) * 1000, 3)}
    predicted = out.tokens[0]  # (H, P, D)
    return PredictResponse(
        model=model.name, space_id=model.manifest.space_id, initial_state=start.tokens[-1].mean(axis=0).tolist(),
        states=predicted.mean(axis=1).tolist(),
        tokens=encode_array(predicted, body.encoding, body.dtype) if body.output == "tokens" else None,
        proprio=out.poses[0].tolist(), timings_ms=timings,
    )


async def _predict_future_tokens(
    services: Services, model: ServedModel, future: FuturePredictor, body: PredictRequest, deadline: float | None
) -> PredictResponse:
    """V-JEPA 2: a past clip -> the predicted tokens of the next tubelet steps (mask predictor, no actions)."""
    spec = future.spec
    if body.actions is not None or body.state is not None or body.proprio is not None:
        raise UnprocessableInput(
            f"model {model.name!r} predicts from a past clip alone: give 'context' only (no actions, state, proprio)",
            code=ErrorCode.INVALID_CONTEXT)
    assert body.context is not None
    items = to_media_items(body.context, services.settings, frame_sampling(body, default_frames=spec.context_frames))
    observed = await observe_clip(services, model, items, spec.context_frames)
    started = time.perf_counter()
    predicted = await future.predict(observed.clip, deadline)
    return PredictResponse(
        model=model.name, space_id=model.manifest.space_id, initial_state=predicted.context_pooled.tolist(),
        states=predicted.tokens.mean(axis=1).tolist(),
        tokens=encode_array(predicted.tokens, body.encoding, body.dtype) if body.output == "tokens" else None,
        sampling=None if observed.sampled is None else SampledFrames.model_validate(observed.sampled,
                                                                                    from_attributes=True),
        timings_ms={"decode": round(observed.decode_ms, 3),
                    "predict": round((time.perf_counter() - started) * 1000, 3)},
    )
