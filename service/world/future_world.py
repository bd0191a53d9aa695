"""V-JEPA 2 with its mask predictor: a past clip -> the tokens of the next tubelet steps, no actions. It predicts
and scores surprise (one clip's future steps against what the encoder saw); it does not plan or stream."""

from __future__ import annotations

import time

import numpy as np

from service.errors import ErrorCode, UnprocessableInput
from service.world.encoding import Encoder
from service.world.future import FuturePredictor
from service.world.inputs import WorldLimits, refuse_context
from service.world.model import (
    FrameStream,
    Observation,
    ObservationNeed,
    PredictInputs,
    Prediction,
    PredictQuery,
    Scored,
    SurpriseInputs,
    SurpriseQuery,
    WorldModel,
    elapsed_ms,
)
from service.world.surprise import FutureSurprise


class FutureWorld(WorldModel):
    scorer: FutureSurprise | None

    def __init__(self, name: str, encoder: Encoder, limits: WorldLimits, future: FuturePredictor,
                 scorer: FutureSurprise | None, tubelet: int) -> None:
        super().__init__(name, encoder, limits, scorer)
        self.future = future
        self.tubelet = tubelet  # frames per encoder time step

    def how_to_calibrate(self) -> str:
        return "export it again with `jepa-export vjepa2 FOLDER --surprise-videos VIDEOS`, a folder of normal videos"

    def check_prediction(self, inputs: PredictInputs) -> PredictQuery:
        given = inputs.actions is not None or inputs.state is not None or inputs.proprio is not None
        refuse_context(given, f"model {self.name!r} predicts from a past clip alone: give 'context' only (no "
                       "actions, state, proprio)")
        frames = self.future.spec.context_frames
        return PredictQuery(ObservationNeed(clip_frames=frames, video_frames=frames), tokens=inputs.tokens)

    async def predict(self, query: PredictQuery, observation: Observation | None,
                      deadline: float | None = None) -> Prediction:
        """A past clip (padded by the clip rule) -> the predicted tokens of the next tubelet steps."""
        assert observation is not None
        started = time.perf_counter()
        predicted = await self.future.predict(observation.pixels, deadline)
        return Prediction(initial_state=predicted.context_pooled, states=predicted.tokens.mean(axis=1),
                          timings_ms={"predict": elapsed_ms(started)},
                          tokens=predicted.tokens if query.tokens else None)

    def check_surprise(self, inputs: SurpriseInputs) -> SurpriseQuery:
        """One clip of the encoder's frames_per_clip frames, nothing padded: its future tubelet steps are scored
        against what the predictor expected from its first context_frames."""
        self.require_scorer()
        given = inputs.states is not None or inputs.actions is not None or inputs.proprio is not None
        refuse_context(given, f"model {self.name!r} scores a clip from its frames alone: give 'observations' "
                       "only (no states, actions or proprio)")
        frames = self.encoder.clip.frames_per_clip
        return SurpriseQuery(self.threshold(inputs.threshold),
                             ObservationNeed(clip_frames=frames, exact=True, video_frames=frames))

    async def surprise(self, query: SurpriseQuery, observation: Observation | None,
                       deadline: float | None = None) -> Scored:
        scorer = self.require_scorer()
        assert observation is not None
        clip = observation.pixels
        started = time.perf_counter()
        tokens = await self.encoder.clip_tokens(clip, deadline)  # (steps * P, D)
        encoded = time.perf_counter()
        spec = self.future.spec
        context = np.ascontiguousarray(clip[:, :spec.context_frames])  # NCTHW item: (3, context_frames, H, W)
        result = await scorer.score(tokens, context, deadline)
        steps = spec.context_frames + self.tubelet * np.arange(spec.future_steps)
        timings = {"encode": round((encoded - started) * 1000, 3), "predict": elapsed_ms(encoded)}
        return Scored(steps, result, query.threshold, scorer.spec, timings)

    def open_stream(self, threshold: float | None = None) -> FrameStream:
        self.require_scorer()
        raise UnprocessableInput(f"model {self.name!r} scores whole clips (V-JEPA 2's mask predictor): send them to "
                                 "POST /surprise", code=ErrorCode.NO_SURPRISE)
