"""POST /surprise: observations + actions -> how surprising each step is to the model's predictor."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.inputs import frame_sampling, to_media_items
from service.api.schemas import COMMON_ERRORS, SurpriseCalibration, SurpriseRequest, SurpriseResponse, error_responses
from service.errors import ErrorCode, PayloadTooLarge, UnprocessableInput
from service.model_pool import ServedModel
from service.pipeline import observe_exact_clip, observe_states, observe_tokens, require_surprise
from service.settings import Settings
from service.state import Services
from service.world import FutureSurprise, Surprise, SurpriseScorer, TokenSurprise
from service.world.rollout import ActionConditioned

router = APIRouter(tags=["world"], responses=error_responses(*COMMON_ERRORS, 404))

VIDEO_FRAMES = 16  # frames sampled from a video observation when the request names no num_frames


def check_actions(rollout: ActionConditioned, actions: list[list[float]], settings: Settings,
                  within_box: bool = True) -> np.ndarray:
    if len(actions) > settings.max_surprise_steps:
        raise PayloadTooLarge(f"{len(actions)} steps; the limit is {settings.max_surprise_steps}",
                              {"max_surprise_steps": settings.max_surprise_steps}, code=ErrorCode.TOO_MANY_STEPS)
    try:
        array = np.asarray(actions, dtype=np.float32)
    except ValueError as exc:
        raise UnprocessableInput("actions must all have the same length", code=ErrorCode.INVALID_ACTION) from exc
    return rollout.check_actions(array, within_box=within_box)


def check_states(scorer: SurpriseScorer, states: list[list[float]]) -> np.ndarray:
    dim = scorer.rollout.spec.state_dim
    if any(len(s) != dim for s in states):
        raise UnprocessableInput(f"every state must have {dim} values", {"state_dim": dim},
                                 code=ErrorCode.DIMENSION_MISMATCH)
    array = np.asarray(states, dtype=np.float32)
    if not np.isfinite(array).all():
        raise UnprocessableInput("states contain NaN or Inf", code=ErrorCode.INVALID_VECTOR)
    return array


@router.post("/surprise", response_model=SurpriseResponse)
async def surprise(
    body: SurpriseRequest, services: ReadyServicesDep, request_deadline: DeadlineDep
) -> SurpriseResponse:
    deadline = request_deadline.at(body.timeout_ms)
    model = services.models.resolve_model(body.model, services.settings.default_model)
    scorer = require_surprise(model)
    if isinstance(scorer, FutureSurprise):
        steps, result, timings = await _score_clip(services, model, scorer, body, deadline)
    elif isinstance(scorer, TokenSurprise):
        steps, result, timings = await _score_frames(services, model, scorer, body, deadline)
    else:
        steps, result, timings = await _score_steps(services, model, scorer, body, deadline)
    threshold = scorer.spec.threshold if body.threshold is None else body.threshold
    return SurpriseResponse(
        model=model.name, space_id=model.manifest.space_id, steps=steps.tolist(), scores=result.scores.tolist(),
        distances=result.distances.tolist(), threshold=threshold,
        surprising=steps[result.over(threshold)].tolist(),
        calibration=SurpriseCalibration.model_validate(scorer.spec, from_attributes=True), timings_ms=timings,
    )


async def _score_steps(services: Services, model: ServedModel, scorer: SurpriseScorer, body: SurpriseRequest,
                       deadline: float | None) -> tuple[np.ndarray, Surprise, dict[str, float]]:
    """Pooled action-conditioned predictors: each observed state against its prediction from the one before."""
    settings = services.settings
    if body.actions is None:
        raise UnprocessableInput(f"model {model.name!r} is action-conditioned: give 'actions'",
                                 code=ErrorCode.INVALID_ACTION)
    if body.proprio is not None:
        raise UnprocessableInput(f"model {model.name!r} takes no 'proprio' (only V-JEPA 2-AC does)",
                                 code=ErrorCode.INVALID_PROPRIO)
    actions = check_actions(scorer.rollout, body.actions, settings)
    timings: dict[str, float] = {}
    if body.states is not None:
        states, first, observed = check_states(scorer, body.states), 0, len(body.states)
    else:
        assert body.observations is not None
        items = to_media_items(body.observations, settings, frame_sampling(body, default_frames=VIDEO_FRAMES))
        seen = await observe_states(services, model, items, deadline)
        states, first, observed = seen.states, seen.first, seen.frames
        timings = {"decode": round(seen.decode_ms, 3), "encode": round(seen.inference_ms, 3)}
    if len(actions) != observed - 1:
        raise UnprocessableInput(
            f"{observed} observations need {observed - 1} actions (one between each two); got {len(actions)}",
            {"observations": observed, "actions": len(actions)}, code=ErrorCode.INVALID_ACTION)
    if len(states) < 2:
        raise UnprocessableInput(
            f"model {model.name!r} needs at least {first + 2} observations to score a step "
            f"(a state is a clip of {first + 1} frames); got {observed}",
            {"min_observations": first + 2}, code=ErrorCode.INVALID_CONTEXT)
    started = time.perf_counter()
    result = await scorer.score(states, actions[first:], deadline)
    timings["predict"] = round((time.perf_counter() - started) * 1000, 3)
    if not np.isfinite(result.scores).all():
        raise UnprocessableInput("the states are too large: the predictor's output overflowed",
                                 code=ErrorCode.INVALID_VECTOR)
    return np.arange(first + 1, observed), result, timings


async def _score_clip(services: Services, model: ServedModel, scorer: FutureSurprise, body: SurpriseRequest,
                      deadline: float | None) -> tuple[np.ndarray, Surprise, dict[str, float]]:
    """V-JEPA 2's mask predictor: one clip of frames_per_clip frames; its future tubelet steps are scored against
    what the predictor expected from its first context_frames."""
    if body.states is not None or body.actions is not None or body.proprio is not None:
        raise UnprocessableInput(f"model {model.name!r} scores a clip from its frames alone: give 'observations' "
                                 "only (no states, actions or proprio)", code=ErrorCode.INVALID_CONTEXT)
    assert body.observations is not None
    frames = model.clip.frames_per_clip
    items = to_media_items(body.observations, services.settings, frame_sampling(body, default_frames=frames))
    seen = await observe_exact_clip(services, model, items, frames)
    started = time.perf_counter()
    tokens = (await model.encode([seen.clip], deadline, outputs=("tokens",)))["tokens"][0]  # (steps * P, D)
    encoded = time.perf_counter()
    spec = scorer.future.spec
    context = np.ascontiguousarray(seen.clip[:, :spec.context_frames])  # NCTHW item: (3, context_frames, H, W)
    result = await scorer.score(tokens, context, deadline)
    tubelet = model.manifest.input.tubelet
    steps = spec.context_frames + tubelet * np.arange(spec.future_steps)
    return steps, result, {"decode": round(seen.decode_ms, 3), "encode": round((encoded - started) * 1000, 3),
                           "predict": round((time.perf_counter() - encoded) * 1000, 3)}


async def _score_frames(services: Services, model: ServedModel, scorer: TokenSurprise, body: SurpriseRequest,
                        deadline: float | None) -> tuple[np.ndarray, Surprise, dict[str, float]]:
    """V-JEPA 2-AC: frames encoded one by one, the pose at each and the actions between them; frame t + 1 is scored
    against its prediction from the observed frames up to t (teacher-forced, the last context_frames of them)."""
    rollout = scorer.rollout
    if body.states is not None:
        raise UnprocessableInput(f"model {model.name!r} scores frames (their token grids): give 'observations', "
                                 "not pooled states", code=ErrorCode.INVALID_CONTEXT)
    if body.actions is None:
        raise UnprocessableInput(f"model {model.name!r} is action-conditioned: give 'actions', one between each two "
                                 "observations", code=ErrorCode.INVALID_ACTION)
    if body.proprio is None:
        raise UnprocessableInput(f"model {model.name!r} needs 'proprio': the end-effector state at each observation "
                                 "frame", {"proprio_dim": rollout.spec.proprio_dim}, code=ErrorCode.INVALID_PROPRIO)
    actions = check_actions(rollout, body.actions, services.settings, within_box=False)
    if len(body.proprio) != len(actions) + 1:
        raise UnprocessableInput(
            f"{len(body.proprio)} observations (proprio) need {len(body.proprio) - 1} actions (one between each two); "
            f"got {len(actions)}", {"proprio": len(body.proprio), "actions": len(actions)},
            code=ErrorCode.INVALID_ACTION)
    if any(len(pose) != rollout.spec.proprio_dim for pose in body.proprio):
        raise UnprocessableInput(f"every proprio state must have {rollout.spec.proprio_dim} values",
                                 {"proprio_dim": rollout.spec.proprio_dim}, code=ErrorCode.INVALID_PROPRIO)
    poses = np.asarray(body.proprio, np.float64)
    if not (np.abs(poses) <= np.finfo(np.float32).max).all():  # NaN fails the comparison too
        raise UnprocessableInput("proprio holds values beyond float32 (or NaN)", code=ErrorCode.INVALID_PROPRIO)
    assert body.observations is not None
    items = to_media_items(body.observations, services.settings, frame_sampling(body, default_frames=VIDEO_FRAMES))
    tokens, decode_ms, encode_ms = await observe_tokens(services, model, items, deadline)
    observed = rollout.start_state(tokens, poses.astype(np.float32))  # one pose per decoded frame
    started = time.perf_counter()
    result = await scorer.score(observed, actions, deadline)
    timings = {"decode": round(decode_ms, 3), "encode": round(encode_ms, 3),
               "predict": round((time.perf_counter() - started) * 1000, 3)}
    if not np.isfinite(result.scores).all():
        raise UnprocessableInput("the poses or actions are too large: the predictor's output overflowed",
                                 code=ErrorCode.INVALID_PROPRIO)
    return np.arange(1, len(actions) + 1), result, timings
