"""The world-model interface: what /predict_future, /plan, /surprise and WS /stream/surprise ask of a model.

Three families of predictor answer it (chosen once per model, in service/model_pool.py):
- pooled action-conditioned predictors, (pooled state, action) -> next state: the demo and users' own world
  models (PooledWorld: LatentRollout + SurpriseScorer);
- V-JEPA 2-AC, frames' token grids + end-effector poses + actions -> the next frame's tokens (TokenWorld:
  TokenRollout + TokenSurprise);
- V-JEPA 2 with its mask predictor, a past clip -> the tokens of the next tubelet steps, no actions (FutureWorld:
  FuturePredictor + FutureSurprise).
A model with none of them is EncoderOnly. This base class refuses every request with the error a client can act
on; a family overrides what it can do, so a refusal reads the same wherever it is met.

An endpoint is two calls. `check_*` takes the request's numbers as they came (lists), refuses bad input with a 4xx
of the error table before any media is decoded, and says which observation to decode (ObservationNeed); then
`predict` / `plan` / `surprise` take the checked query and the decoded Observation. Both take and return plain
data (numpy arrays, frozen dataclasses), never request bodies or the app's Services: media decoding stays with the
caller (service/pipeline.py), so a front process can decode while a core process holding the batchers, engines
and world models answers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from contract import SurpriseSpec
from service.errors import ErrorCode, UnprocessableInput
from service.media.video import SampledVideo
from service.world.encoding import Encoder
from service.world.inputs import Rows, WorldLimits
from service.world.planner import CEMConfig, CostMode
from service.world.streams import StreamReady, StreamStep
from service.world.surprise import FutureSurprise, Surprise, SurpriseScorer, TokenSurprise

VIDEO_FRAMES = 16  # frames /surprise samples from a video observation when the request names no num_frames


def elapsed_ms(since: float) -> float:
    """Milliseconds since a time.perf_counter() instant, as the responses' timings_ms report them."""
    return round((time.perf_counter() - since) * 1000, 3)


@dataclass(frozen=True)
class ObservationNeed:
    """Which observation a world model needs decoded from a request's media items."""

    # None: every frame of every item, oldest first, (k, 3, H, W); n: one clip of n frames in the encoder's layout
    clip_frames: int | None = None
    exact: bool = False  # the clip has exactly clip_frames frames, nothing padded (a padded frame would count as seen)
    # frames sampled from a video when the request names no num_frames; None: a video is read by the default
    # sampling and the request's sampling options do not apply
    video_frames: int | None = None


FRAMES = ObservationNeed()  # every frame, as given


@dataclass(frozen=True)
class Observation:
    """Decoded media, as a world model asked for it."""

    pixels: np.ndarray  # frames (k, 3, H, W), or one clip item in the encoder's layout
    decode_ms: float
    sampled: tuple[SampledVideo | None, ...] = ()  # per media item: the frames taken from a video (None: not one)


@dataclass(frozen=True)
class PredictInputs:
    """A /predict_future request's numbers, as given."""

    context: int = 0  # context media items; 0: the request starts from `state`
    state: Sequence[float] | None = None
    actions: Rows | None = None
    proprio: Rows | None = None
    tokens: bool = False  # the predicted token grids are wanted


@dataclass(frozen=True)
class PredictQuery:
    observation: ObservationNeed | None  # what to decode from the context; None: start from `state`
    actions: np.ndarray | None = None  # (H, A)
    state: np.ndarray | None = None  # (D,)
    proprio: np.ndarray | None = None  # (n, proprio_dim), one per context frame
    tokens: bool = False


@dataclass(frozen=True)
class Prediction:
    initial_state: np.ndarray  # (D,)
    states: np.ndarray  # (H, D) after each step (token predictors: the mean of the predicted tokens)
    timings_ms: dict[str, float]
    tokens: np.ndarray | None = None  # (H, P, D) predicted token grids, when asked for
    poses: np.ndarray | None = None  # (H, proprio_dim) end-effector states after each action (V-JEPA 2-AC)


@dataclass(frozen=True)
class PlanInputs:
    """A /plan request's numbers and settings, as given (None: the model's default, else the server's)."""

    observation: int  # observation media items
    goal_state: Sequence[float] | None = None  # None: the goal is an image, decoded like the observation
    proprio: Rows | None = None
    horizon: int | None = None
    samples: int | None = None
    iterations: int | None = None
    elites: int | None = None
    cost: CostMode = "final"
    distance: Literal["auto", "l2", "l1"] = "auto"
    action_repeat: int = 1
    subspace: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class PlanQuery:
    observation: ObservationNeed  # of the observation frames and of a goal image
    config: CEMConfig
    subspace: str  # where the cost compares states ('auto' resolved)
    goal_state: np.ndarray | None = None
    proprio: np.ndarray | None = None

    @property
    def sizes(self) -> dict[str, int]:
        config = self.config
        return {"horizon": config.horizon, "samples": config.samples, "iterations": config.iterations,
                "elites": config.elites}


@dataclass(frozen=True)
class PlanOutcome:
    actions: np.ndarray  # (H, A), inside the action box
    cost: float
    zero_action_cost: float  # the predicted cost of doing nothing
    states: np.ndarray  # (H, D) predicted states along the plan
    iteration_costs: list[float]
    timings_ms: dict[str, float]
    poses: np.ndarray | None = None  # (H, proprio_dim) predicted end-effector states (V-JEPA 2-AC)


@dataclass(frozen=True)
class SurpriseInputs:
    """A /surprise request's numbers, as given."""

    observations: int = 0  # observation media items; 0: `states` are given
    states: Rows | None = None
    actions: Rows | None = None
    proprio: Rows | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class SurpriseQuery:
    threshold: float
    observation: ObservationNeed | None  # None: the states were given
    states: np.ndarray | None = None
    actions: np.ndarray | None = None
    proprio: np.ndarray | None = None


@dataclass(frozen=True)
class Scored:
    steps: np.ndarray  # the observation index of each score
    surprise: Surprise
    threshold: float
    calibration: SurpriseSpec
    timings_ms: dict[str, float]

    @property
    def surprising(self) -> np.ndarray:
        return self.steps[self.surprise.over(self.threshold)]


class FrameStream(Protocol):
    """One WS /stream/surprise connection's scoring: frames in, one StreamStep each, in order."""

    ready: StreamReady
    steps: int  # frames pushed so far

    async def push(self, frame: np.ndarray, action: Sequence[float] | None,
                   proprio: Sequence[float] | None) -> StreamStep:
        """frame (3, H, W) preprocessed, with the action that led to it and the pose at it, as the client sent
        them: checked here, refused with a 4xx of the error table."""
        ...


Scorer = SurpriseScorer | TokenSurprise | FutureSurprise


class WorldModel:
    def __init__(self, name: str, encoder: Encoder, limits: WorldLimits, scorer: Scorer | None = None) -> None:
        self.name = name
        self.encoder = encoder
        self.limits = limits
        self.scorer = scorer  # predicted-vs-observed scores, when the manifest has a calibration

    @property
    def calibration(self) -> SurpriseSpec | None:
        """The surprise calibration served; None: /surprise and the stream refuse."""
        return None if self.scorer is None else self.scorer.spec

    def require_scorer(self) -> Scorer:
        if self.scorer is None:
            raise self.no_surprise()
        return self.scorer

    def how_to_calibrate(self) -> str:
        return ("surprise needs a pooled action-conditioned predictor, V-JEPA 2's mask predictor or V-JEPA 2-AC's "
                "predictor, calibrated at export")

    def no_predictor(self) -> UnprocessableInput:
        return UnprocessableInput(f"model {self.name!r} has no action-conditioned predictor",
                                  code=ErrorCode.NO_PREDICTOR)

    def no_surprise(self) -> UnprocessableInput:
        return UnprocessableInput(f"model {self.name!r} has no surprise calibration: {self.how_to_calibrate()}",
                                  code=ErrorCode.NO_SURPRISE)

    def threshold(self, requested: float | None) -> float:
        """The score above which a step is surprising: the request's, else the model's calibration's."""
        if self.calibration is None:
            raise self.no_surprise()
        return self.calibration.threshold if requested is None else requested

    def check_prediction(self, inputs: PredictInputs) -> PredictQuery:
        raise self.no_predictor()

    async def predict(self, query: PredictQuery, observation: Observation | None,
                      deadline: float | None = None) -> Prediction:
        raise self.no_predictor()

    def check_plan(self, inputs: PlanInputs) -> PlanQuery:
        raise self.no_predictor()

    async def plan(self, query: PlanQuery, observation: Observation, goal: Observation | None,
                   deadline: float | None = None) -> PlanOutcome:
        raise self.no_predictor()

    def check_surprise(self, inputs: SurpriseInputs) -> SurpriseQuery:
        raise self.no_surprise()

    async def surprise(self, query: SurpriseQuery, observation: Observation | None,
                       deadline: float | None = None) -> Scored:
        raise self.no_surprise()

    def open_stream(self, threshold: float | None = None) -> FrameStream:
        raise self.no_surprise()


class EncoderOnly(WorldModel):
    """A model with an encoder and no predictor (I-JEPA, V-JEPA 2 exported without its mask predictor)."""
