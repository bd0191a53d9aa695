"""Surprise: how far what happened is from what the predictor expected, one score per step.

The action-conditioned predictor says what the next state should be; the
distance between that prediction and the state actually observed is the
violation-of-expectation signal (a ball that teleports is far from where it was
predicted). The raw distance depends on the model, so the manifest carries the
mean and std of the distance on held-out normal data, measured at export, and a
score is the distance as a z-score against that: 3 means three standard
deviations above a normal step, whatever the model.

Every prediction goes through the predictor's DynamicBatcher: the steps of one
request are one batch, and many requests or streams share batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract import SurpriseSpec
from service.world.future import FuturePredictor
from service.world.rollout import LatentRollout
from service.world.token_rollout import TokenRollout, TokenState


def distances(metric: str, predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(S, D), (S, D) -> (S,) distance per step, in float64 (float32 states far apart would overflow)."""
    predicted, observed = predicted.astype(np.float64), observed.astype(np.float64)
    if metric == "mse":
        return ((predicted - observed) ** 2).mean(axis=-1)
    if metric == "l2":
        return np.linalg.norm(predicted - observed, axis=-1)
    if metric == "cosine":
        norms = np.linalg.norm(predicted, axis=-1) * np.linalg.norm(observed, axis=-1)
        return 1.0 - (predicted * observed).sum(axis=-1) / np.maximum(norms, 1e-12)
    raise ValueError(f"unknown surprise metric {metric!r}")


@dataclass(frozen=True)
class Surprise:
    distances: np.ndarray  # (S,) raw distance between predicted and observed state
    scores: np.ndarray  # (S,) the distance normalised by the manifest's calibration

    def over(self, threshold: float) -> np.ndarray:
        """Indices (into the S steps) whose score exceeds the threshold."""
        return np.flatnonzero(self.scores > threshold)


class SurpriseScorer:
    """Observed states + the actions between them -> a surprise score for every state after the first."""

    def __init__(self, rollout: LatentRollout, spec: SurpriseSpec) -> None:
        self.rollout = rollout
        self.spec = spec

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.spec.mean) / self.spec.std

    async def score(self, states: np.ndarray, actions: np.ndarray, deadline: float | None = None) -> Surprise:
        """states (S + 1, D), actions (S, A): action i led from state i to state i + 1 -> S scores.

        Each prediction starts from the observed state (one step ahead, not a free rollout), so a violation
        raises the score at its own step and does not poison every later one. All S predictions are one batch.
        """
        if len(actions) != len(states) - 1:
            raise ValueError(f"{len(states)} states need {len(states) - 1} actions; got {len(actions)}")
        if len(actions) == 0:
            return Surprise(np.zeros(0), np.zeros(0))
        predicted = await self.rollout.step_batch(states[:-1], actions, deadline)  # (S, D)
        raw = distances(self.spec.metric, predicted, states[1:])
        return Surprise(raw, self.normalise(raw))


def future_token_l1(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(m, P, D) predicted and observed tokens of m future tubelet steps -> (m,) mean |predicted -
    layer_norm(observed)| per step: V-JEPA's training loss, whose targets are the layer-normed encoder tokens."""
    observed = observed.astype(np.float64)
    centred = observed - observed.mean(-1, keepdims=True)
    target = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-6)
    return np.abs(predicted.astype(np.float64) - target).mean(axis=(1, 2))


class FutureSurprise:
    """V-JEPA 2 with its mask predictor: a clip of the encoder's frames_per_clip frames -> one score per future
    tubelet step. The mask predictor sees the clip's first context_frames and predicts the tokens of the rest;
    the encoder sees the whole clip, and the score is how far the prediction is from those observed tokens
    (the manifest's `l1_tokens`), z-scored against normal video measured at export. Both calls go through their
    components' batchers."""

    def __init__(self, future: FuturePredictor, spec: SurpriseSpec) -> None:
        self.future = future
        self.spec = spec

    async def score(
        self, observed_tokens: np.ndarray, context_clip: np.ndarray, deadline: float | None = None
    ) -> Surprise:
        """observed_tokens (steps * P, D) of the whole clip, context_clip (3, context_frames, H, W) -> m scores."""
        predicted = (await self.future.predict(context_clip, deadline)).tokens  # (m, P, D)
        m, p, d = predicted.shape
        raw = future_token_l1(predicted, observed_tokens[-m * p:].reshape(m, p, d))
        return Surprise(raw, (raw - self.spec.mean) / self.spec.std)


class TokenSurprise:
    """V-JEPA 2-AC: observed frames (each frame's layer-normed tokens), the end-effector pose at each and the actions
    between them -> one score per frame after the first: the mean |prediction - observed| over the frame's tokens
    (`l1_tokens`, V-JEPA 2-AC's training loss; both sides layer-normed), the prediction teacher-forced from the
    observed frames before it (TokenRollout.teacher_forced), z-scored against normal trajectories measured at
    export. The predictor calls of one request are one batch of its batcher."""

    def __init__(self, rollout: TokenRollout, spec: SurpriseSpec) -> None:
        self.rollout = rollout
        self.spec = spec

    async def score(self, observed: TokenState, actions: np.ndarray, deadline: float | None = None) -> Surprise:
        """observed n frames, actions (n - 1, A) -> n - 1 scores (frame t + 1 against its prediction from <= t)."""
        predicted = await self.rollout.teacher_forced(observed, actions, deadline)  # (n - 1, P, D)
        raw = np.abs(predicted.astype(np.float64) - observed.tokens[1:].astype(np.float64)).mean(axis=(1, 2))
        return Surprise(raw, (raw - self.spec.mean) / self.spec.std)
