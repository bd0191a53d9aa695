"""Surprise as a stream (WS /stream/surprise): frames arrive one at a time and each is scored as POST /surprise
scores it, with the same input checks; every encode and predict call goes through the model's batchers, shared
with other streams and requests."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from contract import SurpriseSpec
from service.errors import ErrorCode, UnprocessableInput
from service.world.inputs import check_actions, check_proprio, refuse_proprio
from service.world.surprise import Surprise, SurpriseScorer, TokenSurprise
from service.world.token_rollout import TokenState


@dataclass(frozen=True)
class StreamStep:
    step: int  # index of the frame in the stream, from 0
    distance: float | None  # None until the predictor has a state and an action behind this frame
    score: float | None
    surprising: bool = False  # score above the stream's threshold


@dataclass(frozen=True)
class StreamReady:
    """What a stream tells its client before the first frame."""

    frames_per_clip: int  # frames before the first state (1: every frame is encoded alone)
    action_dim: int
    proprio_dim: int
    threshold: float
    calibration: SurpriseSpec


class _ScoredStream:
    """What both streams share: the step count, the action each scored frame needs, and the threshold."""

    def __init__(self, scorer: SurpriseScorer | TokenSurprise, ready: StreamReady, within_box: bool) -> None:
        self.scorer = scorer
        self.ready = ready
        self._within_box = within_box
        self.steps = 0

    def needs_action(self) -> bool:
        """Whether the next frame is scored, and so needs the action that led to it."""
        raise NotImplementedError

    def _due_action(self, action: Sequence[float] | None) -> np.ndarray | None:
        """The checked action that led to the next frame, when that frame is scored; None when it is not."""
        if not self.needs_action():
            return None
        if action is None:
            raise UnprocessableInput(f"frame {self.steps} needs the action that led to it",
                                     code=ErrorCode.INVALID_ACTION)
        return check_actions([action], self.scorer.rollout.spec, self._within_box)[0]

    def _scored(self, step: int, result: Surprise, overflow: UnprocessableInput) -> StreamStep:
        if not np.isfinite(result.scores).all():
            raise overflow
        score = float(result.scores[-1])
        return StreamStep(step, float(result.distances[-1]), score, score > self.ready.threshold)


class SurpriseStream(_ScoredStream):
    """A pooled predictor's stream: each frame's state (the clip of the last `window` frames) against the
    prediction from the state before it and the action between them."""

    def __init__(self, scorer: SurpriseScorer, encode: Callable[[np.ndarray], Awaitable[np.ndarray]], window: int,
                 threshold: float) -> None:
        spec = scorer.rollout.spec
        super().__init__(scorer, StreamReady(window, spec.action_dim, spec.proprio_dim, threshold, scorer.spec),
                         within_box=True)
        self._encode = encode  # the last `window` frames (k, 3, H, W) -> their state (D,)
        self._frames: deque[np.ndarray] = deque(maxlen=window)
        self._previous: np.ndarray | None = None  # the state at the last frame, once it has a full clip

    def needs_action(self) -> bool:
        return self._previous is not None

    async def push(self, frame: np.ndarray, action: Sequence[float] | None, proprio: Sequence[float] | None = None,
                   deadline: float | None = None) -> StreamStep:
        checked = self._due_action(action)
        refuse_proprio(proprio is not None, "this model")
        step = self.steps
        self.steps += 1
        self._frames.append(frame)
        if len(self._frames) < (self._frames.maxlen or 1):
            return StreamStep(step, None, None)
        state = await self._encode(np.stack(self._frames))
        previous, self._previous = self._previous, state
        if previous is None or checked is None:
            return StreamStep(step, None, None)
        result = await self.scorer.score(np.stack([previous, state]), checked[None], deadline)
        return self._scored(step, result, UnprocessableInput("the predictor's output overflowed",
                                                             code=ErrorCode.INVALID_VECTOR))


class TokenSurpriseStream(_ScoredStream):
    """V-JEPA 2-AC's stream: frames arrive with the pose at each and the action that led to them; each is scored
    against the prediction from the last W = context_frames frames before it, which needs the last W + 1 frames:
    one predictor item per frame. Recorded arm actions turn the wrist, so they are not held to the planner's box
    (as in /surprise)."""

    def __init__(self, scorer: TokenSurprise, encode: Callable[[np.ndarray], Awaitable[np.ndarray]],
                 threshold: float) -> None:
        spec = scorer.rollout.spec
        super().__init__(scorer, StreamReady(1, spec.action_dim, spec.proprio_dim, threshold, scorer.spec),
                         within_box=False)
        self._encode = encode  # one preprocessed frame (3, H, W) -> its encoder tokens (P', D)
        window = spec.context_frames
        self._tokens: deque[np.ndarray] = deque(maxlen=window + 1)  # (P, D) layer-normed, per frame
        self._poses: deque[np.ndarray] = deque(maxlen=window + 1)
        self._actions: deque[np.ndarray] = deque(maxlen=window)  # action i led from frame i to frame i + 1

    def needs_action(self) -> bool:
        return self.steps > 0

    async def push(self, frame: np.ndarray, action: Sequence[float] | None, proprio: Sequence[float] | None,
                   deadline: float | None = None) -> StreamStep:
        checked = self._due_action(action)
        dim = self.ready.proprio_dim
        if proprio is None:
            raise UnprocessableInput(f"frame {self.steps} needs 'proprio': the {dim}-value end-effector state at it",
                                     {"proprio_dim": dim}, code=ErrorCode.INVALID_PROPRIO)
        pose = check_proprio([proprio], dim)
        rollout = self.scorer.rollout
        seen = rollout.start_state((await self._encode(frame))[None], pose)
        step = self.steps
        self.steps += 1
        self._tokens.append(seen.tokens[0])
        self._poses.append(seen.poses[0])
        if checked is None:
            return StreamStep(step, None, None)
        self._actions.append(checked)
        result = await self.scorer.score(TokenState(np.stack(self._tokens), np.stack(self._poses)),
                                         np.stack(self._actions), deadline)
        return self._scored(step, result, UnprocessableInput(
            "the poses or actions are too large: the predictor's output overflowed", code=ErrorCode.INVALID_PROPRIO))
