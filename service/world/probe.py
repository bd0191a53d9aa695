"""Probe heads: small classifiers trained on a model's frozen features, served through a batcher of their own.

A head is one more ONNX component of the model's repository entry (written by `jepa-export probe`): pooled
features (B, dim) in, class probabilities (B, labels) out. Requests for a head share its DynamicBatcher like
requests for the encoder share the encoder's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract import HeadSpec
from service.batching import DynamicBatcher


@dataclass(frozen=True)
class Ranked:
    labels: list[str]
    scores: list[float]


class ProbeHead:
    def __init__(self, name: str, batcher: DynamicBatcher, spec: HeadSpec) -> None:
        self.name = name
        self._batcher = batcher
        self.spec = spec

    async def probabilities(self, features: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """(N, dim) raw pooled features -> (N, labels) probabilities, all N in one request to the head's batcher."""
        outputs = await self._batcher.infer([{"features": f} for f in features], deadline=deadline,
                                            outputs=("probabilities",))
        return np.stack([o["probabilities"] for o in outputs])

    def top_k(self, probabilities: np.ndarray, k: int) -> list[Ranked]:
        """Per row the k most probable labels, best first (ties: the label listed first in the manifest)."""
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [Ranked([self.spec.labels[j] for j in row], [float(p[j]) for j in row])
                for row, p in zip(order, probabilities, strict=True)]
