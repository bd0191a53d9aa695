"""Future prediction without actions: V-JEPA 2's mask predictor, exported as one graph (component `future`).

A clip of the past (the manifest's `context_frames` frames) goes in; the
predicted tokens of the next `future_steps` tubelet steps come out, plus the
pooled context. Requests share the component's DynamicBatcher like any encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract import FutureSpec
from service.batching import DynamicBatcher


@dataclass(frozen=True)
class PredictedFuture:
    tokens: np.ndarray  # (future_steps, tokens_per_step, D)
    context_pooled: np.ndarray  # (D,)


class FuturePredictor:
    def __init__(self, batcher: DynamicBatcher, spec: FutureSpec) -> None:
        self._batcher = batcher
        self.spec = spec

    async def predict(self, clip: np.ndarray, deadline: float | None = None) -> PredictedFuture:
        """clip (3, context_frames, H, W), preprocessed -> the predicted future."""
        (out,) = await self._batcher.infer([{"pixel_values": clip}], deadline=deadline,
                                           cost=self.spec.future_steps * self.spec.tokens_per_step)
        tokens = out["predicted"].reshape(self.spec.future_steps, self.spec.tokens_per_step, -1)
        return PredictedFuture(tokens, out["context_pooled"])
