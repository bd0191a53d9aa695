"""kNN classification: the labels of a query's nearest stored points, counted or weighted by similarity.

Weights by metric (the collection's score convention): cosine (1 + score) / 2, in [0, 1]; inner product
exp(score - best score), a softmax over the neighbours; l2 (a squared distance) 1 / (1 + score). A label's score
is its share of the total weight (majority: its share of the votes). Ties go to the label whose nearest point is
nearer. Neighbours without the label field (or with a label that is not a string, number or bool) do not vote.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.index.collection import Hit

Vote = Literal["majority", "weighted"]


@dataclass(frozen=True)
class LabelVote:
    label: str
    score: float  # share of the weight (or of the votes), in [0, 1]
    votes: int  # neighbours with this label


def neighbour_weights(scores: Sequence[float], metric: str, vote: Vote) -> list[float]:
    if vote == "majority":
        return [1.0] * len(scores)
    if metric == "cosine":
        return [(1.0 + s) / 2.0 for s in scores]
    if metric == "ip":
        best = max(scores, default=0.0)
        return [math.exp(s - best) for s in scores]
    return [1.0 / (1.0 + max(s, 0.0)) for s in scores]


def label_of(metadata: dict, field: str) -> str | None:
    value = metadata.get(field)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def vote_labels(hits: Sequence[Hit], field: str, metric: str, vote: Vote) -> list[LabelVote]:
    """Hits, nearest first -> every label among them, best first."""
    labelled = [(label_of(h.metadata, field), h.score) for h in hits]
    labelled = [(label, score) for label, score in labelled if label is not None]
    weights = neighbour_weights([score for _, score in labelled], metric, vote)
    if not all(math.isfinite(w) for w in weights):  # scores that overflowed float32 (huge vectors): count instead
        weights = [1.0] * len(labelled)
    total = sum(weights)
    weight: dict[str, float] = {}
    count: dict[str, int] = {}
    first: dict[str, int] = {}
    for rank, ((label, _), w) in enumerate(zip(labelled, weights, strict=True)):
        weight[label] = weight.get(label, 0.0) + w
        count[label] = count.get(label, 0) + 1
        first.setdefault(label, rank)
    ranked = sorted(weight, key=lambda label: (-weight[label], first[label]))
    return [LabelVote(label, weight[label] / total if total > 0 else 0.0, count[label]) for label in ranked]
